"""CloudTrail records of API calls, without IO.

Theory of operation
-------------------
The web layer notes what one call was (:class:`CallRecord`: the action, the caller, the
parsed request, the answer or the error, the request id, the peer) and
:func:`cloudtrail_record` turns it into one record in CloudTrail's format, a dict ready
to be written as one JSON line. The rules:

* ``requestParameters`` and ``responseElements`` use CloudTrail's lower-camel member
  names and never hold record data: every ``Data`` member is left out, bytes anywhere
  are dropped, and so are the ``Records`` lists of PutRecords and GetRecords (keeping
  them without their data would still make a record as large as the call, and building
  it would cost more than the call itself). A read-only call's ``responseElements`` is
  ``null`` (what it read is not an effect), as is a failed call's.
* ``errorCode`` / ``errorMessage`` are present exactly when the call failed, whatever
  refused it (a bad signature, a policy, validation, the engine).
* ``eventCategory`` and ``readOnly`` come from the action registry; ``managementEvent``
  is true for the ``Management`` category.
* ``userIdentity`` is the verified principal's (``IAMUser``); without one (no ``--iam``,
  or a call refused before its signature was verified) it is ``Unknown`` with the access
  key id the request named, when it named one.
* ``resources`` lists the stream (or consumer) the request names, or for a call that
  names it otherwise (GetRecords' shard iterator) the stream the web layer found.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from server.core.actions import Action, EventCategory
from server.core.principals import Principal

__all__ = ["EVENT_VERSION", "CallRecord", "cloudtrail_record", "principal_id", "scrub"]

#: The CloudTrail record format version these records follow.
EVENT_VERSION: Final = "1.09"
_SOURCE: Final = "kinesis.amazonaws.com"
_LEFT_OUT: Final = frozenset({"Data", "Records"})


@dataclass(slots=True)
class CallRecord:
    """What the web layer saw of one API call."""

    action: Action
    request_id: str
    event_id: str
    time: float
    """When the call arrived (epoch seconds)."""
    region: str
    account_id: str
    source_ip: str | None = None
    user_agent: str | None = None
    principal: Principal | None = None
    access_key_id: str | None = None
    """The key id the request named (kept even when it was not verified)."""
    request: Any = None
    """The parsed body, or ``None`` when the call failed before it was parsed."""
    response: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    stream_name: str | None = None
    """The stream a request names other than by name or ARN (GetRecords' iterator)."""


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def scrub(value: Any) -> Any:
    """``value`` with lower-camel member names, without ``Data`` and ``Records``
    members or bytes."""
    if isinstance(value, dict):
        return {
            _camel(str(key)): scrub(item)
            for key, item in value.items()
            if key not in _LEFT_OUT and not isinstance(item, bytes | bytearray | memoryview)
        }
    if isinstance(value, list):
        return [scrub(item) for item in value if not isinstance(item, bytes | bytearray)]
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    return value


def principal_id(principal: Principal) -> str:
    """A stable unique id for a user, shaped like IAM's (``AIDA`` + 17 characters)."""
    digest = hashlib.sha256(principal.arn.encode()).hexdigest().upper()
    return "AIDA" + digest[:17]


def _identity(call: CallRecord) -> dict[str, Any]:
    principal = call.principal
    if principal is None:
        identity: dict[str, Any] = {"type": "Unknown"}
        if call.access_key_id is not None:
            identity["accessKeyId"] = call.access_key_id
        return identity
    return {
        "type": "IAMUser",
        "principalId": principal_id(principal),
        "arn": principal.arn,
        "accountId": principal.account_id,
        "accessKeyId": principal.access_key_id,
        "userName": principal.name,
    }


def _resources(call: CallRecord) -> list[dict[str, str]]:
    body = call.request
    if not isinstance(body, dict):
        return []
    stream_prefix = f"arn:aws:kinesis:{call.region}:{call.account_id}:stream/"
    consumer = body.get("ConsumerARN")
    if isinstance(consumer, str):
        return [{"accountId": call.account_id, "type": "AWS::Kinesis::StreamConsumer",
                 "ARN": consumer}]
    arn = body.get("StreamARN")
    name = body.get("StreamName", call.stream_name)
    if not isinstance(arn, str):
        arn = stream_prefix + name if isinstance(name, str) else None
    if arn is None:
        return []
    return [{"accountId": call.account_id, "type": "AWS::Kinesis::Stream", "ARN": arn}]


def _event_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cloudtrail_record(call: CallRecord) -> dict[str, Any]:
    """The CloudTrail record of one call (see the module docstring for the rules)."""
    action = call.action
    failed = call.error_code is not None
    record: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": _identity(call),
        "eventTime": _event_time(call.time),
        "eventSource": _SOURCE,
        "eventName": action.name,
        "awsRegion": call.region,
        "sourceIPAddress": call.source_ip,
        "userAgent": call.user_agent,
    }
    if failed:
        record["errorCode"] = call.error_code
        record["errorMessage"] = call.error_message
    record["requestParameters"] = (
        scrub(call.request) if isinstance(call.request, dict) else None
    )
    record["responseElements"] = (
        None if failed or action.read_only or call.response is None else scrub(call.response)
    )
    record.update(
        {
            "requestID": call.request_id,
            "eventID": call.event_id,
            "readOnly": action.read_only,
            "resources": _resources(call),
            "eventType": "AwsApiCall",
            "managementEvent": action.category is EventCategory.MANAGEMENT,
            "recipientAccountId": call.account_id,
            "eventCategory": action.category.value,
        }
    )
    return record
