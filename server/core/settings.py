"""Stream settings beyond shards and records: encryption, capacity mode, enhanced
monitoring, resource policies.

Theory of operation
-------------------
Every setting lives in the stream's metadata (``StreamMeta``) and is saved at once; none
changes how records are kept locally (encryption is recorded and reported, the bytes stay
as they are; the metrics settings are what a metrics exporter reads; policies are
stored for whoever evaluates them).

==========================  ==============  ===========================================
action                      stream state    effect
==========================  ==============  ===========================================
StartStreamEncryption       ACTIVE only     ``KMS`` + KeyId; UPDATING for the state delay
StopStreamEncryption        ACTIVE only     ``NONE``; UPDATING for the state delay
UpdateStreamMode            ACTIVE only     PROVISIONED <-> ON_DEMAND (shards stay);
                                            UPDATING for the state delay
Enable/DisableEnhancedMon.  ACTIVE only     add/remove shard-level metrics (``ALL``: all
                                            seven); answers the sets before and after
Put/Get/DeleteResourcePol.  any but gone    the policy (JSON text) of the stream or of one
                                            of its consumers, by ARN
==========================  ==============  ===========================================
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from server.core.errors import InvalidArgumentException, ResourceNotFoundException
from server.core.shapes import SHARD_LEVEL_METRIC_NAMES
from server.core.streams import Stream, StreamTable

__all__ = ["ALL_METRICS", "StreamSettings"]

#: The shard-level metrics ``ALL`` stands for, in the service's order.
ALL_METRICS: Final = SHARD_LEVEL_METRIC_NAMES


def _metrics(requested: list[str]) -> set[str]:
    return set(ALL_METRICS) if "ALL" in requested else set(requested)


class StreamSettings:
    """The settings actions over the engine's stream table."""

    def __init__(self, table: StreamTable) -> None:
        self.table = table
        self.storage = table.storage
        self._account = table.account

    def _updating(self, stream: Stream, now: float) -> None:
        meta = stream.meta
        meta.status = "UPDATING"
        meta.status_since = now
        self.storage.save_stream(meta)

    # -- encryption ------------------------------------------------------------------

    def start_stream_encryption(self, request: dict[str, Any], now: float) -> None:
        """StartStreamEncryption: KMS with the given key (the records stay as they are)."""
        stream = self.table.active_stream(request, now)
        if request["EncryptionType"] != "KMS":
            raise InvalidArgumentException(
                f"Encryption type {request['EncryptionType']} is not valid for "
                "StartStreamEncryption; use KMS."
            )
        stream.meta.encryption_type = "KMS"
        stream.meta.key_id = request["KeyId"]
        self._updating(stream, now)

    def stop_stream_encryption(self, request: dict[str, Any], now: float) -> None:
        """StopStreamEncryption: back to NONE."""
        stream = self.table.active_stream(request, now)
        if request["EncryptionType"] != "KMS":
            raise InvalidArgumentException(
                f"Encryption type {request['EncryptionType']} is not valid for "
                "StopStreamEncryption; use KMS."
            )
        stream.meta.encryption_type = "NONE"
        stream.meta.key_id = None
        self._updating(stream, now)

    # -- capacity mode ---------------------------------------------------------------

    def update_stream_mode(self, request: dict[str, Any], now: float) -> None:
        """UpdateStreamMode: PROVISIONED <-> ON_DEMAND; the shards stay as they are."""
        stream = self.table.active_stream(request, now)
        mode: str = request["StreamModeDetails"]["StreamMode"]
        if stream.meta.mode == mode:
            raise InvalidArgumentException(
                f"Stream {stream.meta.name} under account {self._account} is already in "
                f"{mode} mode."
            )
        stream.meta.mode = mode
        self._updating(stream, now)

    # -- enhanced monitoring ---------------------------------------------------------

    def _monitoring(
        self, request: dict[str, Any], now: float, enable: bool
    ) -> dict[str, Any]:
        stream = self.table.active_stream(request, now)
        meta = stream.meta
        current = list(meta.shard_level_metrics)
        wanted = _metrics(request["ShardLevelMetrics"])
        after = set(current) | wanted if enable else set(current) - wanted
        meta.shard_level_metrics = [m for m in ALL_METRICS if m in after]
        self.storage.save_stream(meta)
        return {
            "StreamName": meta.name,
            "CurrentShardLevelMetrics": current,
            "DesiredShardLevelMetrics": list(meta.shard_level_metrics),
            "StreamARN": meta.arn,
        }

    def enable_enhanced_monitoring(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """EnableEnhancedMonitoring: add shard-level metrics."""
        return self._monitoring(request, now, enable=True)

    def disable_enhanced_monitoring(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """DisableEnhancedMonitoring: remove shard-level metrics."""
        return self._monitoring(request, now, enable=False)

    # -- resource policies -----------------------------------------------------------

    def _resource(self, arn: str, now: float) -> Stream:
        """The stream owning ``arn`` (a stream's ARN or one of its consumers')."""
        stream_arn, _, consumer = arn.partition("/consumer/")
        stream = self.table.find(stream_arn.rpartition("/")[2], now)
        if stream is not None and stream.meta.arn == stream_arn and (
            not consumer or any(c["arn"] == arn for c in stream.meta.consumers)
        ):
            return stream
        raise ResourceNotFoundException(
            f"Resource {arn} under account {self._account} not found."
        )

    def put_resource_policy(self, request: dict[str, Any], now: float) -> None:
        """PutResourcePolicy: store the policy (a JSON object) for the stream or consumer."""
        arn: str = request["ResourceARN"]
        stream = self._resource(arn, now)
        policy: str = request["Policy"]
        try:
            parsed = orjson.loads(policy)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise InvalidArgumentException("Policy is not a valid JSON policy document.")
        stream.meta.policies[arn] = policy
        self.storage.save_stream(stream.meta)

    def get_resource_policy(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """GetResourcePolicy: the stored policy, or ``{}`` when there is none."""
        arn: str = request["ResourceARN"]
        stream = self._resource(arn, now)
        return {"Policy": stream.meta.policies.get(arn, "{}")}

    def delete_resource_policy(self, request: dict[str, Any], now: float) -> None:
        """DeleteResourcePolicy: drop the stored policy."""
        arn: str = request["ResourceARN"]
        stream = self._resource(arn, now)
        if stream.meta.policies.pop(arn, None) is None:
            raise ResourceNotFoundException(
                f"No resource policy found for resource {arn} under account {self._account}."
            )
        self.storage.save_stream(stream.meta)
