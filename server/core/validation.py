"""Input shapes of every action and the service's two-phase validation.

Rules (as the service applies them, in this order):

1. **Types.** Walk the body in the model's member order; the first member whose JSON
   type is wrong fails the whole request with ``SerializationException`` and the text of
   the service's Java parser, from one table of target type by JSON type
   (:data:`TYPE_ERRORS`): a scalar of the wrong type names its Java class (``class
   java.lang.String can not be converted to an Integer``; a JSON number is a
   ``com.amazon.coral.value.json.numbers.TruncatingBigNumber``), a list or object where a
   scalar is expected is ``Start of list found where not expected`` / ``Start of
   structure or map found where not expected.``, a scalar where a list, map or structure
   is expected is ``Expected list or null`` / ``Expected map or null`` / ``Expected
   null``. Blobs are base64 and decoded here; bad base64 is a type error too.
   Unknown members and ``null`` values are dropped.
2. **Constraints.** Walk again in member order and collect every failed constraint
   (required, pattern, length, range, enum), at most 10, into one
   ``ValidationException``: ``"2 validation errors detected: A; B"``. Each item reads
   ``Value 'v' at 'path' failed to satisfy constraint: rule`` with the camelCase path
   (``records.2.member.partitionKey``). A value is shown truncated to
   :data:`MAX_VALUE_CHARS` characters, and the walk stops at the tenth failure, so the
   message and the work stay small whatever the body. A list or map more than ten
   times over its length limit is reported by its length alone: its items are neither
   converted nor checked.
3. Only then the action itself runs (stream lookups, state checks) in the engine.

Shapes are data (``server.core.shapes``), written from the botocore service model; each
action's input shape is in the action registry (``server.core.actions``).
"""

from __future__ import annotations

import math
import re
from binascii import Error as BinasciiError
from binascii import a2b_base64
from itertools import islice
from typing import Any

from server.core.actions import ACTIONS
from server.core.errors import (
    SerializationException,
    UnknownOperationException,
    ValidationException,
)
from server.core.shapes import Shape

__all__ = [
    "MAX_ERRORS",
    "MAX_VALUE_CHARS",
    "TYPE_ERRORS",
    "Shape",
    "constraint_error",
    "decode_blob",
    "validate",
    "validate_shape",
    "validation_error",
]

MAX_ERRORS = 10
#: A value in a validation message is cut to this many characters (with "...").
MAX_VALUE_CHARS = 512
#: The largest epoch second a Java ``Date`` (signed 64-bit milliseconds) holds.
_MAX_EPOCH_SECONDS = (2**63 - 1) // 1000


# -- phase 1: types -----------------------------------------------------------------

# Base64 characters whose low 4 (or 2) bits are zero: the only ones allowed right before
# "==" (or "=") in canonical base64, which is all the service accepts.
_B64_LOW4 = frozenset("AQgw")
_B64_LOW2 = frozenset("AEIMQUYcgkosw048")
_B64_BAD = re.compile(r"[^a-zA-Z0-9+/=]|=[^=]")


def decode_blob(value: str) -> bytes | None:
    """Decode canonical base64 (padded, no stray bits); ``None`` if it is not that."""
    if len(value) % 4:
        return None
    if value[-1:] == "=":
        last = value[-3] if value[-2] == "=" else value[-2]
        if last not in (_B64_LOW4 if value[-2] == "=" else _B64_LOW2):
            return None
    try:
        return a2b_base64(value, strict_mode=True)
    except (BinasciiError, ValueError):
        return None


def _blob_error(value: str) -> str:
    prefix = f"'{value}' can not be converted to a Blob: "
    if len(value) % 4:
        return (
            prefix + "Base64 encoded length is expected a multiple of 4 bytes but found: "
            f"{len(value)}"
        )
    bad = _B64_BAD.search(value)
    if bad:
        return prefix + f"Invalid Base64 character: '{bad.group(0)[0]}'"
    return prefix + "Invalid last non-pad Base64 character dectected"


_BOOLEAN = "java.lang.Boolean"
_STRING = "java.lang.String"
#: The Java class the service's JSON parser holds a JSON number in.
_NUMBER = "com.amazon.coral.value.json.numbers.TruncatingBigNumber"
_LIST_START = "Start of list found where not expected"
_MAP_START = "Start of structure or map found where not expected."


def _scalar_errors(target: str, **classes: str) -> dict[str, str]:
    """A row of the table: ``class X can not be converted to <target>`` for each JSON
    type named (``boolean=_BOOLEAN``...), and the container texts."""
    row = {found: f"class {java} can not be converted to {target}" for found, java in
           classes.items()}
    return {**row, "list": _LIST_START, "object": _MAP_START}


def _container_errors(expected: str, other_start: str) -> dict[str, str]:
    """A container's row: ``expected`` for any scalar, ``other_start`` for the other
    container."""
    found_other = "object" if other_start == _MAP_START else "list"
    return {"boolean": expected, "number": expected, "string": expected,
            found_other: other_start}


#: The service's ``SerializationException`` text for a JSON value of the wrong type: one
#: row per target type, one column per JSON type found (``boolean``, ``number``,
#: ``string``, ``list``, ``object``); no cell means the target takes that JSON type. In
#: the one cell holding ``{}``, that is the string itself, upper-cased.
TYPE_ERRORS: dict[str, dict[str, str]] = {
    "string": _scalar_errors("an String", boolean=_BOOLEAN, number=_NUMBER),
    "integer": _scalar_errors("an Integer", boolean=_BOOLEAN, string=_STRING),
    "long": _scalar_errors("an Long", boolean=_BOOLEAN, string=_STRING),
    "boolean": {
        **_scalar_errors("an Boolean", number=_NUMBER),
        "string": "'{}' can not be converted to an Boolean",
    },
    "blob": _scalar_errors("a Blob", boolean=_BOOLEAN, number=_NUMBER),
    "timestamp": _scalar_errors("a Timestamp", boolean=_BOOLEAN, string=_STRING),
    "list": _container_errors("Expected list or null", _MAP_START),
    "map": _container_errors("Expected map or null", _LIST_START),
    "structure": _container_errors("Expected null", _LIST_START),
}


def _json_type(value: object) -> str:
    """The column of :data:`TYPE_ERRORS` for a parsed value (a CBOR value JSON has no type
    for reads as a number, the type the service names for anything it cannot place)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "number"


def _coerce(shape: Shape, value: Any) -> Any:
    kind = shape.kind
    found = _json_type(value)
    error = TYPE_ERRORS[kind].get(found)
    if error is not None:
        raise SerializationException(error.format(value.upper()) if "{}" in error else error)
    if kind in ("integer", "long"):
        target = "an Integer" if kind == "integer" else "an Long"
        if isinstance(value, float):
            if not math.isfinite(value):  # CBOR's NaN and infinities
                raise SerializationException(f"class {_NUMBER} can not be converted to {target}")
            value = math.floor(value)
        if not isinstance(value, int):  # a CBOR value JSON has no type for
            raise SerializationException(f"class {_NUMBER} can not be converted to {target}")
        bits = 31 if kind == "integer" else 63
        if not -(2**bits) <= value < 2**bits:
            raise SerializationException(
                f"Numeric value out of range of {'int' if kind == 'integer' else 'long'}"
            )
        return value
    if kind == "timestamp":
        # Also NaN, infinities and instants a Java Date (epoch milliseconds) cannot hold.
        if not isinstance(value, int | float) or not (
            -_MAX_EPOCH_SECONDS <= value <= _MAX_EPOCH_SECONDS
        ):
            raise SerializationException(f"class {_NUMBER} can not be converted to a Timestamp")
        return float(value)
    if kind == "blob":
        decoded = decode_blob(value)
        if decoded is None:
            raise SerializationException(_blob_error(value))
        return decoded
    if kind == "list":
        assert shape.member is not None
        if _far_too_long(shape, value):
            return value  # its length alone is the answer; its items stay unchecked
        return [_coerce(shape.member, v) if v is not None else None for v in value]
    if kind == "map":
        assert shape.member is not None
        if _far_too_long(shape, value):
            return value  # as for a list: its size alone is the answer
        if any(type(k) is not str for k in value):
            raise SerializationException("Map keys must be strings")
        return {k: _coerce(shape.member, v) for k, v in value.items() if v is not None}
    if kind == "structure":
        out: dict[str, Any] = {}
        for name, member in shape.members:
            v = value.get(name)
            if v is not None:
                out[name] = _coerce(member, v)
        return out
    return value  # string, boolean


# -- phase 2: constraints -----------------------------------------------------------


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _render(shape: Shape, value: Any) -> str:
    """The quoted value as the message shows it, at most :data:`MAX_VALUE_CHARS` long."""
    if value is None:
        return "null"
    if shape.kind == "blob":
        n = len(value)
        return f"'java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]'"
    if shape.kind == "list":
        member = shape.member
        # Only as many items as can show: a list may hold millions.
        shown = value[: MAX_VALUE_CHARS // 2 + 1]
        if member is not None and member.member_str is not None:
            items = [member.member_str] * len(shown)
        else:
            items = [_clip(str(v)) for v in shown]
        text = "[" + ", ".join(items) + ("]" if len(shown) == len(value) else ", ...")
    elif shape.kind == "map":
        shown_items = list(islice(value.items(), MAX_VALUE_CHARS // 4 + 1))
        text = "{" + ", ".join(f"{_clip(k)}={_clip(str(v))}" for k, v in shown_items) + "}"
    elif shape.kind == "structure":
        text = shape.member_str or _clip(str(value))
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = str(value) if not isinstance(value, str) else value
    return f"'{_clip(text)}'"


def _clip(text: str) -> str:
    if len(text) <= MAX_VALUE_CHARS:
        return text
    return text[: MAX_VALUE_CHARS - 3] + "..."


def _check(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    if len(errors) >= MAX_ERRORS:
        return  # the message lists no more: checking further is wasted work

    def fail(rule: str) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append(
                f"Value {_render(shape, value)} at '{path}' failed to satisfy constraint: {rule}"
            )

    if value is None:
        if shape.required:
            fail("Member must not be null")
        return
    kind = shape.kind
    if kind in ("string", "blob", "list", "map"):
        if shape.regex is not None and not shape.regex.fullmatch(value):
            fail(f"Member must satisfy regular expression pattern: {shape.pattern}")
        if shape.enum is not None and value not in shape.enum:
            fail(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        if shape.min is not None and len(value) < shape.min:
            fail(f"Member must have length greater than or equal to {shape.min}")
        if shape.max is not None and len(value) > shape.max:
            fail(f"Member must have length less than or equal to {shape.max}")
    elif kind in ("integer", "long"):
        if shape.min is not None and value < shape.min:
            fail(f"Member must have value greater than or equal to {shape.min}")
        if shape.max is not None and value > shape.max:
            fail(f"Member must have value less than or equal to {shape.max}")
    if kind == "list" and shape.member is not None and _far_too_long(shape, value):
        return
    if kind == "list" and shape.member is not None:
        member = shape.member
        for i, item in enumerate(value, 1):
            if item is None:  # ``"Records": [null]``, ``"TagKeys": ["a", null]``
                _check(member.req(), None, f"{path}.{i}.member", errors)
        if member.kind == "string" and member.enum is not None:
            if any(v not in member.enum for v in value if v is not None):
                fail(
                    "Member must satisfy constraint: [Member must satisfy enum value set: "
                    f"[{', '.join(member.enum)}]]"
                )
        elif member.kind == "string":
            bad = [v for v in value if v is not None and not _string_ok(member, v)]
            if bad:
                fail(
                    "Member must satisfy constraint: [Member must have length less than or "
                    f"equal to {member.max}, Member must have length greater than or equal to "
                    f"{member.min}]"
                )
        else:
            for i, item in enumerate(value, 1):
                if len(errors) >= MAX_ERRORS:
                    break
                if item is not None:
                    _check(member, item, f"{path}.{i}.member", errors)
    elif kind == "map" and shape.key is not None and shape.member is not None:
        if _far_too_long(shape, value):
            return
        key, val = shape.key, shape.member
        if any(not _string_ok(key, k) for k in value):
            fail(
                "Map keys must satisfy constraint: [Member must have length less than or "
                f"equal to {key.max}, Member must have length greater than or equal to {key.min}]"
            )
        if any(not _string_ok(val, v) for v in value.values()):
            fail(
                "Map value must satisfy constraint: [Member must have length less than or "
                f"equal to {val.max}, Member must have length greater than or equal to {val.min}]"
            )
    elif kind == "structure":
        prefix = f"{path}." if path else ""
        for name, member in shape.members:
            item = value.get(name)
            unless = member.required_unless
            if item is None and unless and all(value.get(u) is None for u in unless):
                _check(member.req(), None, prefix + _lower_first(name), errors)
                continue
            _check(member, item, prefix + _lower_first(name), errors)


def _far_too_long(shape: Shape, value: list[Any] | dict[Any, Any]) -> bool:
    """A list or map ten times over its length limit (a hostile body of millions of
    entries): its length is reported and its items are neither coerced nor checked, a
    cost that would otherwise grow with the body."""
    return shape.max is not None and len(value) > 10 * shape.max


def _string_ok(shape: Shape, value: str) -> bool:
    return (shape.min is None or len(value) >= shape.min) and (
        shape.max is None or len(value) <= shape.max
    )


def validation_error(errors: list[str]) -> ValidationException:
    """The one ``ValidationException`` for a list of constraint failures."""
    n = len(errors)
    return ValidationException(
        f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(errors)
    )


def validate(action: str, body: Any) -> dict[str, Any]:
    """Both phases for ``action``'s input shape: the cleaned body, or the exception."""
    entry = ACTIONS.get(action)
    if entry is None or entry.input is None:
        raise UnknownOperationException()
    return validate_shape(entry.input, body)


def validate_shape(shape: Shape, body: Any) -> dict[str, Any]:
    """Both phases for a request of ``shape``: the cleaned body, or the exception."""
    cleaned: dict[str, Any] = _coerce(shape, body)
    errors: list[str] = []
    _check(shape, cleaned, "", errors)
    if errors:
        raise validation_error(errors)
    return cleaned


def constraint_error(path: str, shape: Shape, value: Any, rule: str) -> ValidationException:
    """A single-item ``ValidationException`` for a check the engine makes after lookup."""
    return validation_error(
        [f"Value {_render(shape, value)} at '{path}' failed to satisfy constraint: {rule}"]
    )
