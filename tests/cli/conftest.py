"""Fixtures for the command-line tests.

The commands run their own event loop (``asyncio.Runner``), so a server they talk to
cannot live on the test's loop: it runs on a loop of its own in a thread, on port 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from tests.support import ServerThread


@pytest.fixture
def server_url() -> Iterator[str]:
    """URL of a fresh server for one test."""
    with ServerThread() as srv:
        yield srv.url


@pytest.fixture
def runner() -> CliRunner:
    """Click's runner; stderr is kept apart from stdout."""
    return CliRunner()
