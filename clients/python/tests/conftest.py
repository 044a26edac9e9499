"""Fixtures: real `pyexec serve` processes (see server.py), started once per session."""

from __future__ import annotations

import os
from typing import Iterator, Union

import pytest

from server import Server

TOKEN = "client-test-token"


class Deployed:
    """A service already running elsewhere (PYEXEC_CLIENT_TEST_URL), e.g. the cluster's API; the
    client reads its token from PYEXEC_TOKEN."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")


@pytest.fixture(scope="session")
def server() -> Iterator[Union[Server, Deployed]]:
    """The defaults: no token, the pool of ready sandboxes on; or the deployed service."""
    deployed = os.environ.get("PYEXEC_CLIENT_TEST_URL")
    if deployed:
        yield Deployed(deployed)
        return
    started = Server([])
    yield started
    started.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server started with --api-token-file."""
    started = Server(["--pool-max", "0"], token=TOKEN, token_dir=tmp_path_factory.mktemp("token"))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def busy_server() -> Iterator[Server]:
    """One sandbox at a time and no queue: a second run while one runs is a 429."""
    started = Server(["--max-concurrency", "1", "--max-queue", "0", "--pool-max", "0"])
    yield started
    started.stop()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"

