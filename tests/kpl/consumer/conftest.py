"""Fixtures of the consumer's tests: lease store URLs of every kind, and a DynamoDB-compatible
server (moto's server mode) that the suite starts itself on a free port.

The reading side's fixtures live in ``conftest_reading.py`` and are imported here.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kpl.consumer.leases.memory import MemoryLeaseStore
from tests.kpl.consumer.conftest_reading import *  # noqa: F403

_names = itertools.count()

REGION = "us-east-1"


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """The URL of a moto server on a free port of 127.0.0.1, for the whole session.

    Requests are handled one at a time: moto checks a write's condition and applies the
    write in two steps, which concurrent handler threads could interleave, whereas
    DynamoDB applies each conditional write to an item atomically.
    """
    moto_server = pytest.importorskip("moto.server")
    from werkzeug.serving import make_server

    dispatcher = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
    one_at_a_time = threading.Lock()

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        with one_at_a_time:
            return list(dispatcher(environ, start_response))

    server = make_server(
        "127.0.0.1", 0, application, threaded=True, request_handler=moto_server.MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="moto-dynamodb", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials botocore accepts and moto ignores, for one test only."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def dynamodb_url(dynamodb_endpoint: str, aws_credentials: None) -> str:
    """A lease store URL of a table of its own on the moto server (created on demand)."""
    return f"dynamodb://leases-{next(_names)}?endpoint_url={dynamodb_endpoint}&region={REGION}"


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh lease table of each kind, by URL."""
    kind = request.param
    if kind == "memory":
        name = f"stores-{next(_names)}"
        keeper = MemoryLeaseStore(name)  # the table lives while one store of it is open
        yield f"memory://{name}"
        del keeper
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('leases')}/leases.db"
    else:
        yield request.getfixturevalue("dynamodb_url")
