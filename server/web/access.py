"""Who may do what: the ``--iam`` checks a request passes before the engine runs it.

:class:`AccessControl` holds the SigV4 :class:`~server.web.auth.Verifier` and asks
:func:`server.core.iam.evaluate` about each call. What a call is evaluated against:

* the action's IAM name, from the registry (``Action.iam_action``);
* its resource: ``*`` for the actions without a resource type; else the consumer (or
  stream) ARN a request names (``ConsumerARN``, ``ResourceARN``; for Describe- and
  DeregisterStreamConsumer by ``StreamARN`` + ``ConsumerName``, that consumer's ARN), or
  the stream's ARN (from ``StreamARN`` or ``StreamName``; for GetRecords the stream its
  shard iterator reads, for ListShards the stream its ``NextToken`` pages through). A
  request naming no resource this server knows (a malformed one, an expired iterator, a
  consumer name the stream has not) is left to the engine, which refuses it with the
  service's error;
* the condition context: the stream's tags as ``aws:ResourceTag/KEY`` and the caller's
  identity keys;
* the caller's identity policies and the resource-based policies stored with
  PutResourcePolicy: the stream's, and the consumer's for a consumer resource
  (:meth:`AccessControl.resource_policy`). Within the account, a call is allowed when
  either kind allows it and none denies it.

A refusal is ``AccessDeniedException`` for the whole request (PutRecords included: never
per entry).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from server.core.actions import Action
from server.core.engine import Engine
from server.core.errors import AccessDeniedException, KinesisError
from server.core.iam import (
    AccessRequest,
    Policy,
    Statement,
    denial_message,
    evaluate,
    parse_policy,
    resource_type_is_star,
)
from server.core.principals import Principal
from server.core.streams import Stream
from server.web.auth import Verifier

__all__ = ["AccessControl"]

#: The actions naming a consumer by ``StreamARN`` + ``ConsumerName`` as an alternative to
#: its ``ConsumerARN``, which is their resource either way.
_CONSUMER_BY_NAME = frozenset({"DescribeStreamConsumer", "DeregisterStreamConsumer"})


@lru_cache(maxsize=256)
def _parsed_resource_policy(text: str) -> Policy:
    """A stored policy document, parsed once (an invalid one has no statements)."""
    try:
        return parse_policy(text, resource_policy=True)
    except ValueError:
        return Policy()


def _consumer_arn(stream: Stream | None, consumer_name: str) -> str | None:
    """The ARN of the stream's consumer called ``consumer_name``, or ``None``."""
    if stream is None:
        return None
    arns = [c["arn"] for c in stream.meta.consumers if c["name"] == consumer_name]
    return arns[-1] if arns else None  # the latest registration of the name


class AccessControl:
    """Signature verification and policy checks for one server (``--iam``)."""

    def __init__(self, verifier: Verifier, engine: Engine) -> None:
        self.verifier = verifier
        self._engine = engine
        config = engine.config
        self._stream_prefix = f"arn:aws:kinesis:{config.region}:{config.account_id}:stream/"

    def resource_policy(self, stream_name: str, resource: str, now: float) -> Policy | None:
        """The resource-based policies that apply to ``resource``, as one, or ``None``.

        That is the stream's stored policy (PutResourcePolicy on its ARN) and, when the
        resource is one of its consumers, the consumer's too; evaluation combines them
        with the caller's identity policies (``evaluate``). A stored document that is not
        a valid resource-based policy grants and denies nothing.
        """
        stream = self._engine.streams.find(stream_name, now)
        if stream is None or not stream.meta.policies:
            return None
        stored = stream.meta.policies
        arns = (stream.meta.arn,) if resource == stream.meta.arn else (stream.meta.arn, resource)
        statements: list[Statement] = []
        for arn in arns:
            text = stored.get(arn)
            if text is not None:
                statements.extend(_parsed_resource_policy(text).statements)
        return Policy(tuple(statements)) if statements else None

    def _stream_of(self, action: Action, payload: dict[str, Any], now: float) -> str | None:
        name = payload.get("StreamName")
        arn = payload.get("StreamARN")
        if isinstance(arn, str) and arn.startswith(self._stream_prefix):
            return arn[len(self._stream_prefix) :].partition("/")[0]
        if isinstance(name, str):
            return name
        for member in ("ConsumerARN", "ResourceARN"):
            arn = payload.get(member)
            if isinstance(arn, str) and arn.startswith(self._stream_prefix):
                return arn[len(self._stream_prefix) :].partition("/")[0]
        token = payload.get("ShardIterator")
        if action.name == "GetRecords" and isinstance(token, str):
            try:
                return self._engine.iterators.decode(token, now).stream_name
            except KinesisError:
                return None  # the engine refuses the iterator itself
        next_token = payload.get("NextToken")
        if action.name == "ListShards" and isinstance(next_token, str):
            try:
                return self._engine.control.list_shards_token_stream(next_token, now)
            except KinesisError:
                return None  # the engine refuses the token itself
        return None

    def access_request(
        self, principal: Principal, action: Action, payload: Any, now: float
    ) -> tuple[AccessRequest, str | None] | None:
        """What policy evaluation is asked for this call, and the stream it concerns;
        ``None`` when the request names no resource (the engine refuses it)."""
        identity = {
            "aws:principalarn": principal.arn,
            "aws:username": principal.name,
            "aws:principalaccount": principal.account_id,
        }
        if resource_type_is_star(action.iam_action):
            return AccessRequest(
                principal.arn, principal.account_id, action.iam_action, "*", identity
            ), None
        if not isinstance(payload, dict):
            return None
        stream_name = self._stream_of(action, payload, now)
        if stream_name is None:
            return None
        stream = self._engine.streams.find(stream_name, now)
        named = payload.get("ConsumerARN", payload.get("ResourceARN"))
        if not isinstance(named, str) or not named.startswith(self._stream_prefix) or (
            action.name == "RegisterStreamConsumer"
        ):
            named = None
        consumer_name = payload.get("ConsumerName")
        if named is None and action.name in _CONSUMER_BY_NAME and isinstance(consumer_name, str):
            # StreamARN + ConsumerName: the consumer's ARN is the resource.
            named = _consumer_arn(stream, consumer_name)
            if named is None:
                return None  # no such consumer: the engine refuses the request
        resource = named if named is not None else self._stream_prefix + stream_name
        context = dict(identity)
        if stream is not None:
            for key, value in stream.meta.tags.items():
                context[f"aws:resourcetag/{key}"] = value
        return AccessRequest(
            principal.arn, principal.account_id, action.iam_action, resource, context
        ), stream_name

    def authorize(self, principal: Principal, action: Action, payload: Any, now: float) -> None:
        """Raise ``AccessDeniedException`` unless the policies allow this call."""
        asked = self.access_request(principal, action, payload, now)
        if asked is None:
            return
        request, stream_name = asked
        policy = (
            self.resource_policy(stream_name, request.resource, now)
            if stream_name is not None
            else None
        )
        decision = evaluate(request, principal.policies, policy)
        if not decision.allowed:
            raise AccessDeniedException(denial_message(request, decision))
