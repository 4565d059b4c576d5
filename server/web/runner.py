"""StreamServer: the embeddable server (storage + engine + aiohttp site) as an async context.

This is the asyncio shell around the sans-IO engine: it owns the clock
(``time.time``), the randomness, the listening socket and the storage's lifetime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from server.config import ServerConfig
from server.core.engine import Engine
from server.core.errors import KinesisError
from server.core.faults import Faults
from server.core.hooks import FaultInjector, ThroughputGate
from server.core.principals import Principals, load_principals
from server.core.throughput import Limits, Throughput
from server.storage.base import Storage
from server.storage.durable import DurableStorage
from server.storage.memory import MemoryStorage
from server.web.access import AccessControl
from server.web.app import STOPPING_KEY, make_app
from server.web.audit import AuditLog
from server.web.auth import Verifier
from server.web.metrics import ServerMetrics

__all__ = ["StreamServer"]


class StreamServer:
    """The stream server, embedded: ``async with StreamServer(port=0) as server: server.url``.

    ``config`` gives every setting; keyword ``overrides`` replace single fields of it
    (``StreamServer(port=0, shard_limit=10)``). ``storage`` and ``clock`` are seams for
    tests (a fake clock makes iterator expiry testable against the real server).
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> None:
        base = config if config is not None else ServerConfig()
        self.config: ServerConfig = dataclasses.replace(base, **overrides) if overrides else base
        self._storage = storage
        self._clock = clock if clock is not None else time.time
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.engine: Engine | None = None
        self._audit: AuditLog | None = None
        #: The ``/metrics`` families (``None`` when ``config.metrics`` is off).
        self.metrics: ServerMetrics | None = None

    # -- what the config builds ------------------------------------------------------

    def _make_storage(self) -> Storage:
        """The storage for this server: on disk with ``data_dir``, else in memory."""
        if self.config.data_dir is not None:
            return DurableStorage(self.config.data_dir, segment_bytes=self.config.segment_bytes)
        return MemoryStorage()

    def _make_hooks(self) -> tuple[ThroughputGate | None, FaultInjector | None]:
        """Throughput limits and fault injection from the config."""
        config = self.config
        throughput = (
            Throughput(Limits.aws(config.limits_scale)) if config.limits == "aws" else None
        )
        settings = config.fault_settings()
        return throughput, (Faults(settings) if settings.active else None)

    def _principals(self) -> Principals | None:
        """The ``--iam`` principals (read from their file when given as a path)."""
        iam = self.config.iam
        if iam is None or isinstance(iam, Principals):
            return iam
        return load_principals(iam, self.config.account_id)

    def _iterator_shard(self, token: str) -> tuple[str, str] | None:
        """The stream and shard a shard iterator reads, or ``None`` if it is not valid."""
        if self.engine is None:
            return None
        try:
            state = self.engine.iterators.decode(token, self._clock())
        except KinesisError:
            return None
        return state.stream_name, state.shard_id

    # -- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when configured with 0)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Create the storage and engine and start listening."""
        if self._runner is not None:
            raise RuntimeError("the server is already started")
        principals = self._principals()
        audit = self._open_audit_log()
        try:
            await self._start(principals, audit)
        except BaseException:
            if audit is not None:
                await asyncio.to_thread(audit.close)
            raise

    def _open_audit_log(self) -> AuditLog | None:
        """The audit log, open for appending; one that cannot be opened is an error now."""
        target = self.config.audit_log
        if target is None:
            return None
        try:
            return AuditLog(target)
        except OSError as error:
            raise OSError(
                error.errno, f"cannot write the audit log {target}: {error.strerror}"
            ) from None

    async def _start(self, principals: Principals | None, audit: AuditLog | None) -> None:
        storage = self._storage if self._storage is not None else self._make_storage()
        throughput, faults = self._make_hooks()
        self.engine = Engine(
            self.config.engine_config(),
            storage,
            random.Random(self.config.seed),
            throughput=throughput,
            faults=faults,
            # A durable directory keeps its signing key, so iterators survive a restart.
            iterator_secret=(
                storage.iterator_secret if isinstance(storage, DurableStorage) else None
            ),
        )
        access = (
            AccessControl(Verifier(principals, self.config.region), self.engine)
            if principals is not None
            else None
        )
        self.metrics = (
            ServerMetrics(self._clock, self._iterator_shard) if self.config.metrics else None
        )
        if self.metrics is not None:  # streams a durable data dir brings keep their settings
            for stream in self.engine.streams.all(self._clock()):
                self.metrics.set_shard_level_metrics(
                    stream.meta.name, stream.meta.shard_level_metrics
                )
        app = make_app(
            self.engine, self.config, self._clock, faults=faults, access=access, audit=audit,
            metrics=self.metrics,
        )
        self._audit = audit
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            if self._storage is None:
                storage.close()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])

    async def stop(self) -> None:
        """Stop listening, finish in-flight requests, close the storage. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        runner.app[STOPPING_KEY].set()  # injected latency ends now, not after a shutdown wait
        try:
            await runner.cleanup()
        finally:
            if self.engine is not None:
                self.engine.storage.close()
            audit, self._audit = self._audit, None
            if audit is not None:  # after cleanup: the last in-flight calls are recorded
                await asyncio.to_thread(audit.close)

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
