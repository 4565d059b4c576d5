"""Who may do what: the ``--iam`` checks a request passes before the engine runs it.

:class:`AccessControl` holds the SigV4 :class:`~server.web.auth.Verifier` and asks
:func:`server.core.iam.evaluate` about each call. What a call is evaluated against:

* the action's IAM name, from the registry (``Action.iam_action``);
* its resource: ``*`` for the actions without a resource type; else the consumer (or
  stream) ARN a request names (``ConsumerARN``, ``ResourceARN``), or the stream's ARN
  (from ``StreamARN`` or ``StreamName``; for GetRecords the stream its shard iterator
  reads, for ListShards the stream its ``NextToken`` pages through). A request naming no
  resource this server knows (a malformed one, an expired iterator) is left to the
  engine, which refuses it with the service's error;
* the condition context: the stream's tags as ``aws:ResourceTag/KEY`` and the caller's
  identity keys;
* the caller's identity policies and the stream's resource-based policy, when it has one
  (:meth:`AccessControl.resource_policy`).

A refusal is ``AccessDeniedException`` for the whole request (PutRecords included: never
per entry).
"""

from __future__ import annotations

from typing import Any

from server.core.actions import Action
from server.core.engine import Engine
from server.core.errors import AccessDeniedException, KinesisError
from server.core.iam import AccessRequest, Policy, denial_message, evaluate, resource_type_is_star
from server.core.principals import Principal
from server.web.auth import Verifier

__all__ = ["AccessControl"]


class AccessControl:
    """Signature verification and policy checks for one server (``--iam``)."""

    def __init__(self, verifier: Verifier, engine: Engine) -> None:
        self.verifier = verifier
        self._engine = engine
        config = engine.config
        self._stream_prefix = f"arn:aws:kinesis:{config.region}:{config.account_id}:stream/"

    def resource_policy(self, stream_name: str) -> Policy | None:
        """The stream's resource-based policy, or ``None``.

        Evaluation combines it with the caller's identity policies (``evaluate``); this
        server keeps no resource policies (PutResourcePolicy is not answered), so there is
        none to combine yet.
        """
        return None

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
        named = payload.get("ConsumerARN", payload.get("ResourceARN"))
        resource = (
            named
            if isinstance(named, str) and named.startswith(self._stream_prefix)
            and action.name != "RegisterStreamConsumer"
            else self._stream_prefix + stream_name
        )
        stream = self._engine.streams.find(stream_name, now)
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
        policy = self.resource_policy(stream_name) if stream_name is not None else None
        decision = evaluate(request, principal.policies, policy)
        if not decision.allowed:
            raise AccessDeniedException(denial_message(request, decision))
