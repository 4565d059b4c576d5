"""The observing middleware leaves no reference cycle through the request, so a request
and its parsed body are freed when answered, not at the cyclic GC's next full collection
(back-to-back hostile bodies once piled up tens of MB each)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from server.core.actions import ACTIONS, Action
from server.core.errors import KinesisError, ValidationException
from server.web.keys import ACCEPTED_KEY, ACTION_KEY, ERROR_KEY, PAYLOAD_KEY
from server.web.observe import make_observer


class Counted:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def observe_call(self, action: Action, request: Any, answer: Any,
                     error: KinesisError | None, latency_seconds: float) -> None:
        self.calls.append((action.name, error))


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("fails", [False, True])
async def test_an_observed_request_is_freed_once_answered(fails: bool) -> None:
    metrics = Counted()
    observe = make_observer(region="us-east-1", account_id="000000000000",
                            clock=lambda: 0.0, metrics=metrics)

    async def handler(request: web.Request) -> web.StreamResponse:
        request[ACTION_KEY] = ACTIONS["AddTagsToStream"]
        request[PAYLOAD_KEY] = {"StreamName": "s", "Tags": {f"k{i}": "v" for i in range(9)}}
        if fails:
            request[ERROR_KEY] = ValidationException("1 validation error detected: ...")
            return web.Response(status=400)
        return web.Response()

    request = make_mocked_request("POST", "/")
    freed = weakref.ref(request)
    response = await observe(request, handler)  # type: ignore[call-arg]
    assert metrics.calls[0][0] == "AddTagsToStream"
    assert (metrics.calls[0][1] is not None) is fails
    assert response.status == (400 if fails else 200)
    assert ACCEPTED_KEY not in request
    del request
    assert freed() is None  # by its reference count alone: the cyclic GC is off
