"""The principals the ``--iam`` tests use: an admin, a writer, a reader, a tag-bound user.

* admin: ``kinesis:*`` on ``*``;
* writer: PutRecord(s), DescribeStreamSummary and ListShards on ``stream/orders*``, with an
  explicit Deny of everything on ``stream/orders-archive``;
* reader: ``kinesis:Get*`` on ``stream/orders``;
* tagged: DescribeStreamSummary on streams tagged ``team=blue``.
"""

from __future__ import annotations

from typing import Any

from server.core.principals import Principals, parse_principals

ACCOUNT = "000000000000"
ARN = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/"


def _allow(actions: list[str], resource: str | list[str]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resource}


POLICY_FILE: dict[str, Any] = {
    "principals": [
        {"name": "admin", "access_key_id": "AKIAADMIN", "secret_access_key": "admin-secret",
         "policies": [{"Version": "2012-10-17", "Statement": [_allow(["kinesis:*"], "*")]}]},
        {"name": "writer", "access_key_id": "AKIAWRITER", "secret_access_key": "writer-secret",
         "policies": [{"Version": "2012-10-17", "Statement": [
             _allow(["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary",
                     "kinesis:ListShards"], ARN + "orders*"),
             {"Effect": "Deny", "Action": "kinesis:*", "Resource": ARN + "orders-archive"},
         ]}]},
        {"name": "reader", "access_key_id": "AKIAREADER", "secret_access_key": "reader-secret",
         "policies": [{"Version": "2012-10-17", "Statement": [
             _allow(["kinesis:Get*"], ARN + "orders"),
         ]}]},
        {"name": "tagged", "access_key_id": "AKIATAGGED", "secret_access_key": "tagged-secret",
         "policies": [{"Version": "2012-10-17", "Statement": [
             {"Effect": "Allow", "Action": "kinesis:DescribeStreamSummary", "Resource": "*",
              "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}},
         ]}]},
    ]
}
PRINCIPALS: Principals = parse_principals(POLICY_FILE, ACCOUNT)
