"""The ``--iam`` file: the principals a server knows, their keys and their policies.

The file is JSON::

    {"principals": [{"name": "writer", "access_key_id": "AKIA...",
                     "secret_access_key": "...", "session_token": null,
                     "policies": [{"Version": "2012-10-17", "Statement": [...]}]}]}

Each principal is an IAM user of the server's account, ARN
``arn:aws:iam::ACCOUNT:user/NAME``. Policies are checked when the file is read
(:func:`server.core.iam.parse_policy`), so a malformed file is one
:class:`ValueError` whose message names the principal and the problem; a server refuses
to start with it rather than answering requests under rules it did not understand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.core.iam import Policy, parse_policy

__all__ = ["Principal", "Principals", "load_principals", "parse_principals"]


@dataclass(frozen=True, slots=True)
class Principal:
    """One IAM user: its credentials and identity-based policies."""

    name: str
    """The user name (the last part of its ARN)."""
    arn: str
    """``arn:aws:iam::ACCOUNT:user/NAME``."""
    account_id: str
    """The account the user belongs to."""
    access_key_id: str
    """The key id a request's credential scope names."""
    secret_access_key: str
    """The secret its signatures are made with."""
    session_token: str | None
    """The token a request must carry in ``X-Amz-Security-Token``, or ``None``: none."""
    policies: tuple[Policy, ...]
    """Identity-based policies attached to the user."""


@dataclass(frozen=True, slots=True)
class Principals:
    """Every principal of an ``--iam`` file, looked up by access key id."""

    by_access_key: Mapping[str, Principal]

    def __len__(self) -> int:
        return len(self.by_access_key)


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty string")
    return value


def parse_principals(document: Any, account_id: str) -> Principals:
    """The principals of a parsed ``--iam`` document; :class:`ValueError` names a problem."""
    if not isinstance(document, dict) or not isinstance(document.get("principals"), list):
        raise ValueError('the file must be a JSON object with a "principals" list')
    by_key: dict[str, Principal] = {}
    names: set[str] = set()
    for index, entry in enumerate(document["principals"]):
        where = f"principals[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be an object")
        unknown = set(entry) - {
            "name", "access_key_id", "secret_access_key", "session_token", "policies"
        }
        if unknown:
            raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        name = _text(entry, "name", where)
        where = f"principal {name!r}"
        key = _text(entry, "access_key_id", where)
        secret = _text(entry, "secret_access_key", where)
        token = None if entry.get("session_token") is None else _text(
            entry, "session_token", where
        )
        if name in names:
            raise ValueError(f"{where}: the name is used twice")
        if key in by_key:
            raise ValueError(f"{where}: access key id {key!r} is used twice")
        raw_policies = entry.get("policies", [])
        if not isinstance(raw_policies, list):
            raise ValueError(f"{where}: 'policies' must be a list of policy documents")
        policies = []
        for number, raw in enumerate(raw_policies):
            try:
                policies.append(parse_policy(raw))
            except ValueError as error:
                raise ValueError(f"{where}: policies[{number}]: {error}") from None
        names.add(name)
        by_key[key] = Principal(
            name=name,
            arn=f"arn:aws:iam::{account_id}:user/{name}",
            account_id=account_id,
            access_key_id=key,
            secret_access_key=secret,
            session_token=token,
            policies=tuple(policies),
        )
    return Principals(by_key)


def load_principals(path: str | Path, account_id: str) -> Principals:
    """Read and check an ``--iam`` file; any problem is a one-line :class:`ValueError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"--iam {path}: {error.strerror or error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--iam {path}: not JSON: {error}") from None
    try:
        return parse_principals(document, account_id)
    except ValueError as error:
        raise ValueError(f"--iam {path}: {error}") from None
