"""IAM policy evaluation for Kinesis actions, without IO.

Theory of operation
-------------------
A request is authorised by :func:`evaluate` from an :class:`AccessRequest` (who, which
``kinesis:`` action, on which resource ARN, and the condition context such as the
resource's tags) and the policies that apply: the caller's identity-based policies and,
when the resource has one, its resource-based policy. The rules are IAM's:

1. Default deny: nothing is allowed unless a statement allows it.
2. An explicit ``Deny`` in any applicable policy wins over every ``Allow``.
3. Within one account, an ``Allow`` in either the identity policies or the resource
   policy (naming the caller in ``Principal``) is enough.

A statement applies when its action part matches (``Action`` lists patterns that must
match, ``NotAction`` patterns that must not; ``*`` and ``?`` wildcards, compared without
regard to case), its resource part matches (``Resource`` / ``NotResource``, the same
wildcards, case-sensitive as ARNs are) and every condition holds. An action whose
resource type is ``*`` (ListStreams, DescribeLimits, Enable/DisableEnhancedMonitoring,
the account settings) is evaluated against the resource ``"*"``, so only a statement whose
resource pattern matches ``*`` itself grants it.

Conditions: ``{operator: {key: value | [values]}}``; operators of one statement must all
hold (AND), the values of one key are alternatives (OR). Supported operators are the
common string ones (``StringEquals``, ``StringNotEquals``, ``StringEqualsIgnoreCase``,
``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike``), each with its
``...IfExists`` form, and ``Null``. A key absent from the context fails a positive
operator and satisfies a negated one (as IAM does); ``IfExists`` makes absence a pass.
Keys: ``aws:ResourceTag/KEY`` (the resource's tags), ``aws:PrincipalArn``,
``aws:username``, ``aws:PrincipalAccount``; any other key is absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "STAR_ONLY_ACTIONS",
    "AccessRequest",
    "Decision",
    "Policy",
    "Statement",
    "denial_message",
    "evaluate",
    "parse_policy",
    "resource_type_is_star",
]

#: Actions whose only resource type is ``*`` (the service defines no ARN for them).
STAR_ONLY_ACTIONS: Final = frozenset(
    {
        "kinesis:ListStreams",
        "kinesis:DescribeLimits",
        "kinesis:EnableEnhancedMonitoring",
        "kinesis:DisableEnhancedMonitoring",
        "kinesis:DescribeAccountSettings",
        "kinesis:UpdateAccountSettings",
    }
)

_STRING_OPERATORS: Final = {
    # operator -> (negated, case-insensitive, glob)
    "StringEquals": (False, False, False),
    "StringNotEquals": (True, False, False),
    "StringEqualsIgnoreCase": (False, True, False),
    "StringNotEqualsIgnoreCase": (True, True, False),
    "StringLike": (False, False, True),
    "StringNotLike": (True, False, True),
}


def resource_type_is_star(iam_action: str) -> bool:
    """True when ``iam_action`` is granted only on the resource ``*``."""
    return iam_action in STAR_ONLY_ACTIONS


@lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(
        ".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern
    )
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _matches_any(patterns: tuple[str, ...], value: str, ignore_case: bool) -> bool:
    return any(_glob(p, ignore_case).fullmatch(value) is not None for p in patterns)


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``operator: {key: values}`` test of a statement."""

    operator: str
    key: str
    values: tuple[str, ...]

    def holds(self, context: Mapping[str, str]) -> bool:
        """True when the test passes against the request's condition context."""
        # Condition keys are case-insensitive; tag keys keep their case after the slash.
        value = _lookup(context, self.key)
        if self.operator == "Null":
            want_absent = self.values[0].lower() == "true"
            return (value is None) == want_absent
        base, if_exists = (
            (self.operator[: -len("IfExists")], True)
            if self.operator.endswith("IfExists")
            else (self.operator, False)
        )
        negated, ignore_case, glob = _STRING_OPERATORS[base]
        if value is None:
            return if_exists or negated
        if glob:
            hit = _matches_any(self.values, value, False)
        elif ignore_case:
            hit = value.lower() in {v.lower() for v in self.values}
        else:
            hit = value in self.values
        return hit != negated


def _lookup(context: Mapping[str, str], key: str) -> str | None:
    prefix, slash, rest = key.partition("/")
    if slash:
        return context.get(f"{prefix.lower()}/{rest}")
    return context.get(key.lower())


@dataclass(frozen=True, slots=True)
class Statement:
    """One policy statement, checked and normalised."""

    allow: bool
    actions: tuple[str, ...] | None
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...] | None
    not_resources: tuple[str, ...] | None
    conditions: tuple[Condition, ...] = ()
    #: For a resource-based policy: the principal ARNs (or ``*``) the statement names.
    principals: tuple[str, ...] | None = None

    def applies(self, request: AccessRequest, *, resource_policy: bool = False) -> bool:
        """True when the statement covers the request (its effect then counts)."""
        if resource_policy and not self._names_principal(request):
            return False
        if self.actions is not None:
            if not _matches_any(self.actions, request.action, True):
                return False
        elif self.not_actions is not None and _matches_any(self.not_actions, request.action, True):
            return False
        if self.resources is not None:
            if not _matches_any(self.resources, request.resource, False):
                return False
        elif self.not_resources is not None and _matches_any(
            self.not_resources, request.resource, False
        ):
            return False
        return all(condition.holds(request.context) for condition in self.conditions)

    def _names_principal(self, request: AccessRequest) -> bool:
        principals = self.principals or ()
        account_root = f"arn:aws:iam::{request.account_id}:root"
        return any(
            p in ("*", request.principal_arn, request.account_id, account_root)
            for p in principals
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy document: its statements, in order (order does not change the result)."""

    statements: tuple[Statement, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """What one call asks to do, as policy evaluation sees it."""

    principal_arn: str
    """The caller (``arn:aws:iam::ACCOUNT:user/NAME``)."""
    account_id: str
    """The caller's account."""
    action: str
    """The IAM action (``kinesis:PutRecord``)."""
    resource: str
    """The resource ARN, or ``"*"`` for an action without a resource type."""
    context: Mapping[str, str] = field(default_factory=dict)
    """Condition keys, lower-case before any ``/`` (``aws:resourcetag/Team``)."""


class Decision(Enum):
    """The outcome of :func:`evaluate`."""

    ALLOW = "allow"
    IMPLICIT_DENY = "implicit deny"
    IDENTITY_DENY = "explicit deny in an identity-based policy"
    RESOURCE_DENY = "explicit deny in a resource-based policy"

    @property
    def allowed(self) -> bool:
        """True only for :attr:`ALLOW`."""
        return self is Decision.ALLOW


def evaluate(
    request: AccessRequest,
    identity_policies: tuple[Policy, ...],
    resource_policy: Policy | None = None,
) -> Decision:
    """IAM's verdict on ``request`` (explicit deny > allow > default deny)."""
    allowed = False
    for policy in identity_policies:
        for statement in policy.statements:
            if statement.applies(request):
                if not statement.allow:
                    return Decision.IDENTITY_DENY
                allowed = True
    if resource_policy is not None:
        for statement in resource_policy.statements:
            if statement.applies(request, resource_policy=True):
                if not statement.allow:
                    return Decision.RESOURCE_DENY
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def denial_message(request: AccessRequest, decision: Decision) -> str:
    """The service's ``AccessDeniedException`` text for a refused request."""
    on = "" if request.resource == "*" else f" on resource: {request.resource}"
    head = f"User: {request.principal_arn} is not authorized to perform: {request.action}{on}"
    if decision is Decision.IDENTITY_DENY:
        return f"{head} with an explicit deny in an identity-based policy"
    if decision is Decision.RESOURCE_DENY:
        return f"{head} with an explicit deny in a resource-based policy"
    return f"{head} because no identity-based policy allows the {request.action} action"


# -- parsing ---------------------------------------------------------------------------


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be a string or a non-empty list of strings")


def _action_patterns(value: Any, what: str) -> tuple[str, ...]:
    patterns = _strings(value, what)
    for pattern in patterns:
        if pattern != "*" and ":" not in pattern:
            raise ValueError(f"{what}: {pattern!r} is not 'service:Action' or '*'")
    return patterns


def _conditions(value: Any) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise ValueError("Condition must be an object")
    found: list[Condition] = []
    for operator, tests in value.items():
        base = operator.removesuffix("IfExists")
        if operator != "Null" and base not in _STRING_OPERATORS:
            raise ValueError(f"unsupported condition operator {operator!r}")
        if not isinstance(tests, dict) or not tests:
            raise ValueError(f"Condition {operator!r} must map keys to values")
        for key, values in tests.items():
            strings = tuple(
                str(v).lower() if isinstance(v, bool) else v
                for v in (values if isinstance(values, list) else [values])
            )
            if not strings or not all(isinstance(v, str) for v in strings):
                raise ValueError(f"Condition {operator!r} {key!r}: values must be strings")
            if operator == "Null" and strings[0].lower() not in ("true", "false"):
                raise ValueError(f"Condition Null {key!r}: the value must be true or false")
            found.append(Condition(operator, key, strings))
    return tuple(found)


def _principals(value: Any) -> tuple[str, ...]:
    if value == "*":
        return ("*",)
    if isinstance(value, dict) and set(value) == {"AWS"}:
        return _strings(value["AWS"], "Principal.AWS")
    raise ValueError('Principal must be "*" or {"AWS": ARN or [ARNs]}')


def _statement(raw: Any, index: int, resource_policy: bool) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise ValueError(f"{where}: Effect must be 'Allow' or 'Deny', got {effect!r}")
    if ("Action" in raw) == ("NotAction" in raw):
        raise ValueError(f"{where} must have exactly one of Action and NotAction")
    if ("Resource" in raw) == ("NotResource" in raw):
        raise ValueError(f"{where} must have exactly one of Resource and NotResource")
    known = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
    if resource_policy:
        known.add("Principal")
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unsupported element {sorted(unknown)[0]!r}")
    principals = None
    if resource_policy:
        if "Principal" not in raw:
            raise ValueError(f"{where}: a resource-based policy statement needs a Principal")
        principals = _principals(raw["Principal"])
    return Statement(
        allow=effect == "Allow",
        actions=_action_patterns(raw["Action"], f"{where}.Action") if "Action" in raw else None,
        not_actions=(
            _action_patterns(raw["NotAction"], f"{where}.NotAction")
            if "NotAction" in raw
            else None
        ),
        resources=_strings(raw["Resource"], f"{where}.Resource") if "Resource" in raw else None,
        not_resources=(
            _strings(raw["NotResource"], f"{where}.NotResource") if "NotResource" in raw else None
        ),
        conditions=_conditions(raw["Condition"]) if "Condition" in raw else (),
        principals=principals,
    )


def parse_policy(document: Any, *, resource_policy: bool = False) -> Policy:
    """Check a policy document (a dict, or its JSON text) and normalise it.

    Raises :class:`ValueError` naming the first problem. ``resource_policy`` requires a
    ``Principal`` in every statement (a stream's resource-based policy).
    """
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as error:
            raise ValueError(f"the policy is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("a policy must be a JSON object")
    version = document.get("Version")
    if version not in ("2012-10-17", "2008-10-17"):
        raise ValueError(f"Version must be '2012-10-17', got {version!r}")
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise ValueError(f"unsupported policy element {sorted(unknown)[0]!r}")
    raw = document.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ValueError("Statement must be an object or a non-empty list")
    return Policy(tuple(_statement(s, i, resource_policy) for i, s in enumerate(raw)))
