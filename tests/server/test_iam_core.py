"""IAM policy evaluation and the ``--iam`` file, as plain functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.core.actions import ACTIONS
from server.core.iam import (
    AccessRequest,
    Decision,
    denial_message,
    evaluate,
    parse_policy,
    resource_type_is_star,
)
from server.core.principals import load_principals, parse_principals

ACCOUNT = "000000000000"
USER = f"arn:aws:iam::{ACCOUNT}:user/writer"
STREAM = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/"


def policy(*statements: dict[str, Any]) -> Any:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


def ask(action: str, resource: str, **context: str) -> AccessRequest:
    return AccessRequest(USER, ACCOUNT, action, resource, context)


def allow(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def test_default_deny() -> None:
    assert evaluate(ask("kinesis:PutRecord", STREAM + "orders"), ()) is Decision.IMPLICIT_DENY
    other = policy(allow("kinesis:GetRecords", STREAM + "orders"))
    assert evaluate(ask("kinesis:PutRecord", STREAM + "orders"), (other,)) is (
        Decision.IMPLICIT_DENY
    )


def test_explicit_deny_wins_over_allow_in_any_policy() -> None:
    grant = policy(allow("kinesis:*", "*"))
    deny = policy({"Effect": "Deny", "Action": "kinesis:PutRecord", "Resource": STREAM + "a*"})
    assert evaluate(ask("kinesis:PutRecord", STREAM + "archive"), (grant, deny)) is (
        Decision.IDENTITY_DENY
    )
    assert evaluate(ask("kinesis:PutRecord", STREAM + "b"), (grant, deny)).allowed


@pytest.mark.parametrize(
    ("pattern", "action", "allowed"),
    [
        ("kinesis:PutRecord", "kinesis:PutRecord", True),
        ("kinesis:putrecord", "kinesis:PutRecord", True),  # actions ignore case
        ("kinesis:PutRecord", "kinesis:PutRecords", False),  # no implicit prefix match
        ("kinesis:Put*", "kinesis:PutRecords", True),
        ("kinesis:Get*", "kinesis:GetShardIterator", True),
        ("kinesis:Get*", "kinesis:DescribeStream", False),
        ("kinesis:PutRecor?", "kinesis:PutRecord", True),
        ("kinesis:PutRecor?", "kinesis:PutRecords", False),
        ("*", "kinesis:DeleteStream", True),
        ("s3:*", "kinesis:DeleteStream", False),
    ],
)
def test_action_wildcards(pattern: str, action: str, allowed: bool) -> None:
    grant = policy(allow(pattern, "*"))
    assert evaluate(ask(action, STREAM + "s"), (grant,)).allowed is allowed


def test_not_action_and_not_resource() -> None:
    grant = policy({"Effect": "Allow", "NotAction": "kinesis:Delete*", "Resource": "*"})
    assert evaluate(ask("kinesis:PutRecord", STREAM + "s"), (grant,)).allowed
    assert not evaluate(ask("kinesis:DeleteStream", STREAM + "s"), (grant,)).allowed
    grant = policy({"Effect": "Allow", "Action": "kinesis:*", "NotResource": STREAM + "secret*"})
    assert evaluate(ask("kinesis:PutRecord", STREAM + "public"), (grant,)).allowed
    assert not evaluate(ask("kinesis:PutRecord", STREAM + "secret-1"), (grant,)).allowed


def test_resource_globs_are_case_sensitive_and_cover_consumers() -> None:
    grant = policy(allow("kinesis:*", STREAM + "orders*"))
    assert evaluate(ask("kinesis:PutRecord", STREAM + "orders-eu"), (grant,)).allowed
    assert not evaluate(ask("kinesis:PutRecord", STREAM + "Orders"), (grant,)).allowed
    consumer = STREAM + "orders/consumer/app:1700000000"
    assert evaluate(ask("kinesis:SubscribeToShard", consumer), (grant,)).allowed
    only_streams = policy(allow("kinesis:*", STREAM + "orders"))
    assert not evaluate(ask("kinesis:SubscribeToShard", consumer), (only_streams,)).allowed


def test_star_only_actions_need_a_star_resource() -> None:
    for name in ("ListStreams", "DescribeLimits", "EnableEnhancedMonitoring"):
        assert resource_type_is_star(ACTIONS[name].iam_action)
    assert not resource_type_is_star(ACTIONS["PutRecord"].iam_action)
    on_streams = policy(allow("kinesis:*", STREAM + "*"))
    assert not evaluate(ask("kinesis:ListStreams", "*"), (on_streams,)).allowed
    on_star = policy(allow("kinesis:ListStreams", "*"))
    assert evaluate(ask("kinesis:ListStreams", "*"), (on_star,)).allowed


@pytest.mark.parametrize(
    ("operator", "value", "tags", "allowed"),
    [
        ("StringEquals", "blue", {"aws:resourcetag/team": "blue"}, True),
        ("StringEquals", "blue", {"aws:resourcetag/team": "Blue"}, False),
        ("StringEquals", "blue", {}, False),
        ("StringNotEquals", "blue", {"aws:resourcetag/team": "red"}, True),
        ("StringNotEquals", "blue", {}, True),  # an absent key satisfies a negation
        ("StringEqualsIgnoreCase", "blue", {"aws:resourcetag/team": "BLUE"}, True),
        ("StringNotEqualsIgnoreCase", "blue", {"aws:resourcetag/team": "BLUE"}, False),
        ("StringLike", "bl*", {"aws:resourcetag/team": "blue"}, True),
        ("StringLike", ["red", "g?een"], {"aws:resourcetag/team": "green"}, True),
        ("StringNotLike", "bl*", {"aws:resourcetag/team": "blue"}, False),
        ("StringEqualsIfExists", "blue", {}, True),
        ("StringEqualsIfExists", "blue", {"aws:resourcetag/team": "red"}, False),
        ("Null", "true", {}, True),
        ("Null", "false", {}, False),
        ("Null", "false", {"aws:resourcetag/team": "x"}, True),
    ],
)
def test_resource_tag_conditions(
    operator: str, value: Any, tags: dict[str, str], allowed: bool
) -> None:
    grant = policy(
        allow("kinesis:*", "*", Condition={operator: {"aws:ResourceTag/team": value}})
    )
    request = AccessRequest(USER, ACCOUNT, "kinesis:PutRecord", STREAM + "s", tags)
    assert evaluate(request, (grant,)).allowed is allowed


def test_conditions_of_one_statement_all_hold() -> None:
    grant = policy(
        allow(
            "kinesis:*", "*",
            Condition={
                "StringEquals": {"aws:ResourceTag/team": "blue", "aws:ResourceTag/env": "dev"}
            },
        )
    )
    both = {"aws:resourcetag/team": "blue", "aws:resourcetag/env": "dev"}
    one = {"aws:resourcetag/team": "blue"}
    assert evaluate(AccessRequest(USER, ACCOUNT, "kinesis:PutRecord", "x", both), (grant,)).allowed
    assert not evaluate(
        AccessRequest(USER, ACCOUNT, "kinesis:PutRecord", "x", one), (grant,)
    ).allowed


def test_resource_policy_combines_with_identity_policies() -> None:
    resource = parse_policy(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": USER}, "Action": "kinesis:GetRecords",
                 "Resource": "*"},
                {"Effect": "Deny", "Principal": "*", "Action": "kinesis:DeleteStream",
                 "Resource": "*"},
            ],
        },
        resource_policy=True,
    )
    admin = policy(allow("kinesis:*", "*"))
    request = ask("kinesis:GetRecords", STREAM + "s")
    assert evaluate(request, (), resource).allowed  # the resource policy alone allows
    assert evaluate(ask("kinesis:DeleteStream", STREAM + "s"), (admin,), resource) is (
        Decision.RESOURCE_DENY
    )
    other = AccessRequest(
        f"arn:aws:iam::{ACCOUNT}:user/other", ACCOUNT, "kinesis:GetRecords", STREAM + "s"
    )
    assert not evaluate(other, (), resource).allowed
    with pytest.raises(ValueError, match="needs a Principal"):
        parse_policy(
            {"Version": "2012-10-17", "Statement": [allow("kinesis:*", "*")]},
            resource_policy=True,
        )


def test_denial_messages_are_the_services() -> None:
    request = ask("kinesis:PutRecord", STREAM + "orders")
    assert denial_message(request, Decision.IMPLICIT_DENY) == (
        f"User: {USER} is not authorized to perform: kinesis:PutRecord on resource: "
        f"{STREAM}orders because no identity-based policy allows the kinesis:PutRecord action"
    )
    assert denial_message(request, Decision.IDENTITY_DENY) == (
        f"User: {USER} is not authorized to perform: kinesis:PutRecord on resource: "
        f"{STREAM}orders with an explicit deny in an identity-based policy"
    )
    star = ask("kinesis:ListStreams", "*")
    assert denial_message(star, Decision.IMPLICIT_DENY) == (
        f"User: {USER} is not authorized to perform: kinesis:ListStreams because no "
        "identity-based policy allows the kinesis:ListStreams action"
    )


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "a policy must be a JSON object"),
        ({"Statement": []}, "Version"),
        ({"Version": "2012-10-17", "Statement": []}, "non-empty"),
        ({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe"}]}, "Effect"),
        ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*"}]},
         "Action and NotAction"),
        ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "PutRecord",
                                                  "Resource": "*"}]}, "service:Action"),
        ({"Version": "2012-10-17", "Statement": [allow("kinesis:*", "*", Condition={
            "NumericLessThan": {"aws:ResourceTag/x": "1"}})]}, "NumericLessThan"),
        ({"Version": "2012-10-17", "Statement": [allow("kinesis:*", [])]}, "Resource"),
        ({"Version": "2012-10-17", "Statement": [allow("kinesis:*", "*", Principal="*")]},
         "Principal"),
    ],
)
def test_malformed_policies_name_the_problem(document: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_policy(document)


def _principal(name: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "access_key_id": key, "secret_access_key": "s", **extra}


def test_principals_file(tmp_path: Path) -> None:
    document = {
        "principals": [
            _principal("admin", "AKIAADMIN", policies=[
                {"Version": "2012-10-17", "Statement": [allow("kinesis:*", "*")]}
            ]),
            _principal("temp", "ASIATEMP", session_token="tok"),
        ]
    }
    path = tmp_path / "iam.json"
    path.write_text(json.dumps(document))
    principals = load_principals(path, "123456789012")
    admin = principals.by_access_key["AKIAADMIN"]
    assert admin.arn == "arn:aws:iam::123456789012:user/admin"
    assert len(admin.policies) == 1
    assert admin.session_token is None
    assert principals.by_access_key["ASIATEMP"].session_token == "tok"
    assert len(principals) == 2


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({}, '"principals" list'),
        ({"principals": [{"name": "a"}]}, "principal 'a': 'access_key_id'"),
        ({"principals": [_principal("a", "K"), _principal("a", "L")]}, "name is used twice"),
        ({"principals": [_principal("a", "K"), _principal("b", "K")]}, "used twice"),
        ({"principals": [_principal("a", "K", extra=1)]}, "unknown field 'extra'"),
        ({"principals": [_principal("a", "K", policies=[{"Version": "1"}])]},
         r"principal 'a': policies\[0\]: Version"),
    ],
)
def test_malformed_principals_name_the_problem(document: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_principals(document, ACCOUNT)


def test_unreadable_or_non_json_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--iam .*missing\.json") as missing:
        load_principals(tmp_path / "missing.json", ACCOUNT)
    assert "\n" not in str(missing.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="not JSON"):
        load_principals(bad, ACCOUNT)


def test_iam_cannot_go_with_no_auth() -> None:
    from server.config import ServerConfig

    principals = parse_principals({"principals": []}, ACCOUNT)
    with pytest.raises(ValueError, match="cannot go with --no-auth"):
        ServerConfig(iam=principals, require_auth=False)
