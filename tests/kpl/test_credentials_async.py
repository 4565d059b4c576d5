"""Credentials never block the event loop: providers that may block run in a worker
thread behind one shared, cached fetch; static credentials stay on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

import kpl.auth
from kpl import Producer, ProducerConfig
from kpl.auth import (
    DUMMY_CREDENTIALS,
    CredentialCache,
    CredentialProvider,
    Credentials,
    NoCredentialsError,
    StaticCredentialProvider,
    credential_source,
)
from kpl.errors import KinesisError, NetworkError, RecordFailed
from kpl.transport import AioHttpTransport

REMOTE = "https://kinesis.us-east-1.amazonaws.com"
FIRST = Credentials("AKIDFIRST", "first-secret", "first-token")
SECOND = Credentials("AKIDSECOND", "second-secret", "second-token")

Answer = tuple[int, bytes]


class FakeClock:
    """Wall-clock seconds that only move when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(self.now + seconds, UTC)


class CountingProvider:
    """Hands out ``answers`` in turn (the last one repeats); records the calling thread.

    An exception in ``answers`` is raised instead of returned.
    """

    def __init__(self, *answers: Credentials | BaseException) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.threads: list[int] = []

    def __call__(self) -> Credentials:
        self.threads.append(threading.get_ident())
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


class BlockingProvider:
    """Blocks its (worker) thread until ``release`` is set, like a metadata-service call.

    Make it on the loop's thread; ``entered`` is set on the loop (thread-safely) once
    the provider runs.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, answer: Credentials = FIRST) -> None:
        self.loop = loop
        self.answer = answer
        self.release = threading.Event()
        self.entered = asyncio.Event()
        self.calls = 0
        self.loop_thread = threading.get_ident()

    def __call__(self) -> Credentials:
        if threading.get_ident() == self.loop_thread:
            # Waiting here would freeze the loop (and the test) until the timeout.
            raise AssertionError("the provider was called on the event loop's thread")
        self.calls += 1
        self.loop.call_soon_threadsafe(self.entered.set)
        if not self.release.wait(10):
            raise TimeoutError("the test never released the provider")
        return self.answer


async def until_entered(provider: BlockingProvider, *tasks: asyncio.Task[Any]) -> None:
    """Wait until the provider runs; a task that ends first instead fails the test
    with its own error (e.g. the provider refusing to run on the loop's thread)."""
    entered = asyncio.ensure_future(provider.entered.wait())
    done, _ = await asyncio.wait({entered, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not entered:
            entered.cancel()
            await task
            raise AssertionError("the call finished before its credentials were fetched")


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., Awaitable[tuple[str, list[str]]]]]:
    """A local endpoint on port 0; yields start(*answers) -> (url, Authorization headers
    seen). Answers are (status, body) in turn, the last one repeating; default 200 {}."""
    runners: list[web.AppRunner] = []

    async def start(*answers: Answer) -> tuple[str, list[str]]:
        seen: list[str] = []
        replies = list(answers) or [(200, b"{}")]

        async def handler(request: web.Request) -> web.Response:
            await request.read()
            seen.append(request.headers["Authorization"])
            status, body = replies[min(len(seen) - 1, len(replies) - 1)]
            return web.Response(status=status, body=body)

        app = web.Application()
        app.router.add_post("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}", seen

    yield start
    for runner in runners:
        await runner.cleanup()


def key_of(authorization: str) -> str:
    return authorization.split("Credential=")[1].split("/")[0]


# --------------------------------------------------------------------------- the loop


async def test_blocking_provider_does_not_block_the_loop(server: Any) -> None:
    url, seen = await server()
    provider = BlockingProvider(asyncio.get_running_loop())
    transport = AioHttpTransport(url, credentials=provider)
    try:
        call = asyncio.create_task(transport.call("ListShards", b"{}"))
        # Setting `entered` is itself a callback the loop has to run while blocked.
        await until_entered(provider, call)
        ticks = 0
        for _ in range(50):
            await asyncio.sleep(0)  # yields to the loop: other work goes on
            ticks += 1
        assert ticks == 50
        assert not call.done()
        assert seen == []  # nothing was sent without credentials
        provider.release.set()
        assert await call == b"{}"
    finally:
        provider.release.set()
        await transport.close()
    assert provider.calls == 1
    assert [key_of(a) for a in seen] == ["AKIDFIRST"]


async def test_concurrent_calls_share_one_fetch(server: Any) -> None:
    url, seen = await server()
    provider = BlockingProvider(asyncio.get_running_loop())
    transport = AioHttpTransport(url, credentials=provider)
    try:
        calls = [asyncio.create_task(transport.call("X", b"{}")) for _ in range(8)]
        await until_entered(provider, *calls)  # every task is at the shared fetch by now
        provider.release.set()
        answers = await asyncio.gather(*calls)
    finally:
        provider.release.set()
        await transport.close()
    assert answers == [b"{}"] * 8
    assert provider.calls == 1
    assert transport.credential_cache is not None
    assert transport.credential_cache.fetches == 1
    assert [key_of(a) for a in seen] == ["AKIDFIRST"] * 8


async def test_cancelled_waiter_does_not_cancel_the_shared_fetch() -> None:
    provider = BlockingProvider(asyncio.get_running_loop())
    cache = CredentialCache(provider)
    try:
        first = asyncio.create_task(cache.get())
        second = asyncio.create_task(cache.get())
        await until_entered(provider, first, second)
        first.cancel()
        provider.release.set()
        assert await second is FIRST
    finally:
        provider.release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert provider.calls == 1
    assert cache.fresh() is FIRST


async def test_close_while_fetching_refuses_the_call(server: Any) -> None:
    url, seen = await server()
    provider = BlockingProvider(asyncio.get_running_loop())
    transport = AioHttpTransport(url, credentials=provider)
    call = asyncio.create_task(transport.call("X", b"{}"))
    try:
        await until_entered(provider, call)
        await transport.close()
        provider.release.set()
        with pytest.raises(RuntimeError, match="the transport is closed"):
            await call
    finally:
        provider.release.set()
    assert seen == []


# --------------------------------------------------------------------------- caching


async def test_cached_credentials_are_reused_across_calls(server: Any) -> None:
    url, seen = await server()
    provider = CountingProvider(FIRST, SECOND)
    transport = AioHttpTransport(url, credentials=provider)
    try:
        for _ in range(5):
            await transport.call("X", b"{}")
    finally:
        await transport.close()
    assert provider.calls == 1
    assert [key_of(a) for a in seen] == ["AKIDFIRST"] * 5
    assert threading.get_ident() not in provider.threads  # it ran in a worker thread


# (seconds the credentials live, seconds later still served from the cache,
#  seconds later fetched again). The rule: min(fetched + 300, max(expiry - 900,
#  fetched + 10)); without an expiry, fetched + 300.
REFRESH_CASES = [
    (None, 299.9, 300.0),  # no expiry: asked again after MAX_AGE
    (3600.0, 299.9, 300.0),  # an hour left: MAX_AGE comes first
    (1000.0, 99.9, 100.0),  # due 15 min before expiry
    (905.0, 9.9, 10.0),  # inside the margin: at most every MIN_AGE
    (5.0, 9.9, 10.0),  # about to expire: still at most every MIN_AGE
]


@pytest.mark.parametrize(("lifetime", "reused_at", "fetched_at"), REFRESH_CASES)
async def test_refresh_rule(lifetime: float | None, reused_at: float, fetched_at: float) -> None:
    clock = FakeClock()
    start = clock.now
    expiry = None if lifetime is None else clock.at(lifetime)
    provider = CountingProvider(
        Credentials("AKIDA", "a", expiry=expiry), Credentials("AKIDB", "b", expiry=expiry)
    )
    cache = CredentialCache(provider, clock=clock)
    assert cache.fresh() is None
    assert (await cache.get()).access_key == "AKIDA"
    clock.now = start + reused_at
    assert cache.fresh() is not None
    assert (await cache.get()).access_key == "AKIDA"
    assert provider.calls == 1
    clock.now = start + fetched_at
    assert cache.fresh() is None
    assert (await cache.get()).access_key == "AKIDB"
    assert provider.calls == 2
    assert cache.fetches == 2


@pytest.mark.parametrize(
    ("refusal", "fetches", "keys_sent"),
    [
        # A stale-credential answer makes the next call fetch again.
        (
            b'{"__type":"ExpiredTokenException","message":"The security token is expired"}',
            2,
            ["AKIDFIRST", "AKIDSECOND", "AKIDSECOND"],
        ),
        # Any other refusal keeps the cached credentials.
        (
            b'{"__type":"ProvisionedThroughputExceededException","message":"slow down"}',
            1,
            ["AKIDFIRST", "AKIDFIRST", "AKIDFIRST"],
        ),
    ],
    ids=["expired-token-fetches-again", "other-errors-keep-the-cache"],
)
async def test_a_refusal_refetches_credentials_only_when_they_are_stale(
    server: Any, refusal: bytes, fetches: int, keys_sent: list[str]
) -> None:
    url, seen = await server((400, refusal), (200, b"{}"))
    provider = CountingProvider(FIRST, SECOND)
    transport = AioHttpTransport(url, credentials=provider)
    try:
        with pytest.raises(KinesisError) as caught:
            await transport.call("X", b"{}")
        assert caught.value.error_code == orjson.loads(refusal)["__type"]
        assert await transport.call("X", b"{}") == b"{}"
        assert await transport.call("X", b"{}") == b"{}"
    finally:
        await transport.close()
    assert provider.calls == fetches
    assert [key_of(a) for a in seen] == keys_sent


async def test_invalidate_ignores_credentials_already_replaced() -> None:
    clock = FakeClock()
    cache = CredentialCache(CountingProvider(FIRST, SECOND), clock=clock)
    old = await cache.get()
    cache.invalidate(old)
    new = await cache.get()
    assert (old, new) == (FIRST, SECOND)
    cache.invalidate(old)  # a late answer to a request signed with the old ones
    assert cache.fresh() is SECOND


# --------------------------------------------------------------------------- errors


async def test_failing_provider_raises_and_the_next_call_tries_again(server: Any) -> None:
    url, seen = await server()
    provider = CountingProvider(RuntimeError("SSO session expired: run aws sso login"), FIRST)
    transport = AioHttpTransport(url, credentials=provider)
    try:
        with pytest.raises(RuntimeError, match="SSO session expired: run aws sso login"):
            await transport.call("X", b"{}")
        assert seen == []
        assert await transport.call("X", b"{}") == b"{}"
    finally:
        await transport.close()
    assert provider.calls == 2
    assert [key_of(a) for a in seen] == ["AKIDFIRST"]


async def test_slow_credentials_fail_the_call_within_request_timeout(server: Any) -> None:
    url, seen = await server()
    provider = BlockingProvider(asyncio.get_running_loop())
    transport = AioHttpTransport(url, credentials=provider, request_timeout=0.05)
    try:
        with pytest.raises(NetworkError, match="credentials not available within "
                                               r"request_timeout \(0\.05s\)") as caught:
            await transport.call("PutRecords", b"{}")
        assert caught.value.is_retryable
        assert provider.calls == 1  # the fetch started and is still running
        later = asyncio.create_task(transport.call("PutRecords", b"{}"))
        provider.release.set()  # the fetch the first call gave up on serves this one
        assert await later == b"{}"
    finally:
        provider.release.set()
        await transport.close()
    assert provider.calls == 1
    assert transport.credential_cache is not None
    assert transport.credential_cache.fetches == 1
    assert [key_of(a) for a in seen] == ["AKIDFIRST"]


async def test_a_providers_own_timeout_is_not_taken_for_ours(server: Any) -> None:
    url, seen = await server()
    provider = CountingProvider(TimeoutError("metadata service timed out"))
    transport = AioHttpTransport(url, credentials=provider, request_timeout=5.0)
    try:
        with pytest.raises(TimeoutError, match="metadata service timed out"):
            await transport.call("X", b"{}")
    finally:
        await transport.close()
    assert seen == []


async def test_flush_returns_within_record_ttl_while_credentials_hang(server: Any) -> None:
    url, seen = await server()
    provider = BlockingProvider(asyncio.get_running_loop())
    config = ProducerConfig(record_ttl=0.3, request_timeout=0.05, record_max_buffered_time=0.01)
    try:
        async with Producer("s", url, config=config, credentials=provider) as producer:
            future = await producer.put(b"data", "pk")
            # Without the bound this waits for the provider (released only below).
            await producer.flush()
            assert future.done()
            with pytest.raises(RecordFailed) as caught:
                await future
            provider.release.set()
    finally:
        provider.release.set()
    assert caught.value.code == "Expired"
    assert caught.value.attempts
    assert {a.error_code for a in caught.value.attempts} == {"NetworkError"}
    assert "credentials not available" in (caught.value.attempts[-1].error_message or "")
    assert seen == []
    assert provider.calls == 1


async def test_provider_returning_something_else_is_a_clear_error() -> None:
    cache = CredentialCache(lambda: ("AKID", "secret"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"returned tuple, not kpl\.auth\.Credentials"):
        await cache.get()
    assert cache.fresh() is None


def test_naive_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Credentials("AKID", "secret", expiry=datetime(2026, 11, 26, 3, 0))


@pytest.fixture
def no_environment_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


class ChainSpy:
    """Stands in for botocore's chain lookup: records the thread, gives ``found``."""

    def __init__(self, found: CredentialProvider | None) -> None:
        self.found = found
        self.threads: list[int] = []

    def __call__(self) -> CredentialProvider | None:
        self.threads.append(threading.get_ident())
        return self.found


@pytest.mark.usefixtures("no_environment_credentials")
async def test_missing_chain_fails_the_first_call_not_the_constructor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = ChainSpy(None)
    monkeypatch.setattr(kpl.auth, "_botocore_provider", chain)
    transport = AioHttpTransport(REMOTE, region="us-east-1")
    assert chain.threads == []  # nothing looked up (nor blocked) in __init__
    try:
        for _ in range(2):  # each call looks again, and says the same
            with pytest.raises(NoCredentialsError) as caught:
                await transport.call("ListShards", b"{}")
            assert str(caught.value) == (
                f"no AWS credentials for {REMOTE}: pass credentials=Credentials(...), set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or install the 'aws' extra "
                "(botocore) to use profiles and instance roles"
            )
    finally:
        await transport.close()
    assert len(chain.threads) == 2
    assert threading.get_ident() not in chain.threads


@pytest.mark.usefixtures("no_environment_credentials")
async def test_chain_is_looked_up_once_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = CountingProvider(FIRST)
    chain = ChainSpy(provider)
    monkeypatch.setattr(kpl.auth, "_botocore_provider", chain)
    clock = FakeClock()
    source = credential_source(None, REMOTE, clock=clock)
    assert isinstance(source, CredentialCache)
    assert chain.threads == []
    assert await source.get() is FIRST
    clock.now += CredentialCache.MAX_AGE
    assert await source.get() is FIRST
    assert len(chain.threads) == 1  # the chain once; its provider on every fetch
    assert provider.calls == 2
    loop_thread = threading.get_ident()
    assert loop_thread not in chain.threads
    assert loop_thread not in provider.threads


@pytest.mark.usefixtures("no_environment_credentials")
async def test_producer_records_fail_with_the_missing_credentials_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kpl.auth, "_botocore_provider", ChainSpy(None))
    config = ProducerConfig(record_ttl=5.0)
    async with Producer("s", REMOTE, region="us-east-1", config=config) as producer:
        future = await producer.put(b"data", "pk")
        await producer.flush()
        with pytest.raises(RecordFailed) as caught:
            await future
    assert caught.value.code == "NoCredentialsError"
    assert caught.value.message.startswith(f"no AWS credentials for {REMOTE}: ")
    assert isinstance(caught.value.cause, NoCredentialsError)


# --------------------------------------------------------------------------- static


async def test_static_credentials_sign_on_the_loop_without_a_thread(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []

    class Spy(StaticCredentialProvider):
        def __call__(self) -> Credentials:
            threads.append(threading.get_ident())
            return self.credentials

    to_thread_calls = 0
    real_to_thread = asyncio.to_thread

    async def to_thread_spy(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        nonlocal to_thread_calls
        to_thread_calls += 1
        return await real_to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread_spy)
    url, seen = await server()
    for credentials in (Spy(FIRST), FIRST):
        transport = AioHttpTransport(url, credentials=credentials)
        assert transport.credential_cache is None
        try:
            await asyncio.gather(*(transport.call("X", b"{}") for _ in range(3)))
        finally:
            await transport.close()
    assert to_thread_calls == 0
    assert threads == [threading.get_ident()] * 3  # every request, on the loop thread
    assert [key_of(a) for a in seen] == ["AKIDFIRST"] * 6


def test_source_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = ChainSpy(None)
    env = {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "s"}
    explicit = credential_source(FIRST, REMOTE, environ={}, botocore_chain=chain)
    from_env = credential_source(None, REMOTE, environ=env, botocore_chain=chain)
    local = credential_source(None, "http://127.0.0.1:1", environ={}, botocore_chain=chain)
    assert isinstance(explicit, StaticCredentialProvider)
    assert explicit() is FIRST
    assert isinstance(from_env, StaticCredentialProvider)
    assert from_env() == Credentials("ENV", "s")
    assert isinstance(local, StaticCredentialProvider)
    assert local() is DUMMY_CREDENTIALS
    provider = CountingProvider(FIRST)
    wrapped = credential_source(provider, REMOTE, environ={}, botocore_chain=chain)
    assert isinstance(wrapped, CredentialCache)
    assert wrapped.provider is provider
    chained = credential_source(None, REMOTE, environ={}, botocore_chain=chain)
    assert isinstance(chained, CredentialCache)
    assert chain.threads == []
    assert provider.calls == 0
