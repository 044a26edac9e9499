"""The refusals that are not about the script (token, busy, shutting down, server errors,
unreachable), the token's sources, and the asynchronous client."""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

import httpx
import pytest

from conftest import TOKEN
from pyexec_client import (
    AsyncClient,
    BusyError,
    Client,
    InvalidRequestError,
    NoMainError,
    ServerError,
    ShuttingDownError,
    TransportError,
    UnauthorizedError,
)
from pyexec_client._wire import read_answer
from server import Server

HELLO = "def main():\n    return {'message': 'Hello World'}\n"
#: Holds the busy server's one sandbox until told to stop.
HOLD = "import time\ndef main():\n    time.sleep({seconds})\n    return {{'held': True}}\n"


def test_without_the_token_the_service_refuses(token_server: Server) -> None:
    with Client(token_server.url, token="") as client:
        with pytest.raises(UnauthorizedError) as raised:
            client.run(HELLO)
    assert raised.value.status == 401
    assert "bearer token" in raised.value.message


def test_a_wrong_token_is_refused(token_server: Server) -> None:
    with Client(token_server.url, token="not-it") as client:
        with pytest.raises(UnauthorizedError, match="not valid"):
            client.run(HELLO)


def test_the_token_argument_is_sent(token_server: Server) -> None:
    with Client(token_server.url, token=TOKEN) as client:
        assert client.run(HELLO).result == {"message": "Hello World"}


def test_the_token_is_read_from_pyexec_token(token_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYEXEC_TOKEN", TOKEN)
    monkeypatch.setenv("PYEXEC_URL", token_server.url)
    with Client() as client:
        assert client.run(HELLO).ok


def _hold(server: Server, seconds: float) -> threading.Thread:
    """Runs a sleeping script on `server` in a thread, once it holds the server's one slot (after
    the previous holder's sandbox is gone)."""
    server.wait_until("pyexec_in_flight", lambda n: n == 0, "drop to 0", timeout=30)

    def hold() -> None:
        with Client(server.url, max_retries=0) as client:
            client.run(HOLD.format(seconds=seconds))

    holder = threading.Thread(target=hold)
    holder.start()
    server.wait_for("pyexec_in_flight", 1, timeout=30)
    return holder


def test_a_busy_service_is_429_with_retry_after(busy_server: Server) -> None:
    holder = _hold(busy_server, 3)
    try:
        with Client(busy_server.url, max_retries=0) as client:
            with pytest.raises(BusyError) as raised:
                client.run(HELLO)
        assert raised.value.status == 429
        assert raised.value.retry_after == 1.0
    finally:
        holder.join()


def test_a_busy_service_is_retried_after_retry_after(busy_server: Server) -> None:
    holder = _hold(busy_server, 1.5)
    try:
        with Client(busy_server.url, max_retries=10) as client:
            assert client.run(HELLO).result == {"message": "Hello World"}
        assert busy_server.metric('pyexec_rejected_requests_total{reason="busy"}') >= 1
    finally:
        holder.join()


def test_the_retries_are_bounded(busy_server: Server) -> None:
    holder = _hold(busy_server, 4)
    try:
        before = busy_server.metric('pyexec_rejected_requests_total{reason="busy"}')
        with Client(busy_server.url, max_retries=2, max_retry_wait=0.1) as client:
            with pytest.raises(BusyError):
                client.run(HELLO)
        assert busy_server.metric('pyexec_rejected_requests_total{reason="busy"}') == before + 3
    finally:
        holder.join()


def _answering(status: int, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> httpx.MockTransport:
    """A transport that answers every request with `status` and `body`: for the answers a real
    local service cannot be made to give (a failing sandbox, a shutdown race)."""
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body, headers=headers))


def test_shutting_down_is_503() -> None:
    # The local executor answers 503 only to a request caught in a shutdown; the mapping is checked here.
    with Client("http://pyexec.test", transport=_answering(503, {"error": "the service is shutting down"})) as client:
        with pytest.raises(ShuttingDownError, match="shutting down"):
            client.run(HELLO)


@pytest.mark.parametrize("status", [500, 504])
def test_a_failing_service_is_a_server_error_with_the_execution_s_id(status: int) -> None:
    body = {"error": "Internal error; the service log has the details", "id": "abc"}
    with Client("http://pyexec.test", transport=_answering(status, body)) as client:
        with pytest.raises(ServerError) as raised:
            client.run(HELLO)
    assert (raised.value.status, raised.value.body["id"]) == (status, "abc")


def test_an_http_date_retry_after_is_honoured() -> None:
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, json={"error": "busy"}, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        return httpx.Response(200, json={"result": {}, "stdout": "", "stderr": "", "returncode": 0, "outcome": "success"})

    with Client("http://pyexec.test", transport=httpx.MockTransport(answer)) as client:
        assert client.run(HELLO).ok
    assert len(calls) == 2


def test_an_unreachable_service_is_a_transport_error(server: Server) -> None:
    with Client("http://127.0.0.1:9", timeout=2) as client:
        with pytest.raises(TransportError):
            client.run(HELLO)


@pytest.mark.anyio
async def test_the_async_client_runs_scripts_side_by_side(server: Server) -> None:
    import anyio

    answers = []
    async with AsyncClient(server.url) as client:

        async def one(n: int) -> None:
            answers.append((await client.run(f"def main():\n    return {{'n': {n}}}\n")).result)

        async with anyio.create_task_group() as group:
            for n in range(3):
                group.start_soon(one, n)
        with pytest.raises(NoMainError):
            await client.run("x = 1\n")
    assert sorted(a["n"] for a in answers if a) == [0, 1, 2]


@pytest.mark.anyio
async def test_the_async_client_retries_a_busy_service(busy_server: Server) -> None:
    holder = _hold(busy_server, 1.5)
    try:
        async with AsyncClient(busy_server.url, max_retries=10) as client:
            assert (await client.run(HELLO)).ok
    finally:
        holder.join()


@pytest.mark.parametrize(
    "headers, body, status, error",
    [
        ({"Content-Type": "application/json"}, b"{not json", 400, InvalidRequestError),
        ({"Content-Type": "application/json"}, b'{"script": 42}', 400, InvalidRequestError),
        ({"Content-Type": "application/json"}, b'{"script": "a", "script": "b"}', 400, InvalidRequestError),
        ({"Content-Type": "image/png"}, b"x", 415, InvalidRequestError),
        ({"Content-Type": "application/json", "Origin": "https://evil.example"}, b"{}", 403, UnauthorizedError),
        ({"Content-Type": "application/json", "Host": "attacker.example"}, b"{}", 421, UnauthorizedError),
    ],
)
def test_answers_the_client_never_provokes_map_to_their_errors(
    server: Server, headers: Dict[str, str], body: bytes, status: int, error: type
) -> None:
    # The client always sends valid JSON from loopback: these bodies and headers are sent raw, and
    # the real service's answer is read by the client's own mapping.
    answer = httpx.post(f"{server.url}/execute", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    with pytest.raises(error) as raised:
        read_answer(answer)
    assert raised.value.status == status and raised.value.message == answer.json()["error"]
