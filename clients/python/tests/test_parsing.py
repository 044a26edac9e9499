"""The client's pure readers, on answers a service of this version does not give yet (files) or
gives rarely (odd Retry-After values, malformed bodies, other line endings in an event stream),
and the polls of a wait against a mock service."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any, Dict, List, Tuple

import httpx
import pytest

from pyexec_client import (
    WAIT_POLL_SECONDS,
    AlreadyFinishedError,
    Client,
    Execution,
    File,
    InvalidRequestError,
    Limits,
    NotFoundError,
    OutputEvent,
    PyexecError,
    ResultEvent,
    StateEvent,
)
from pyexec_client._wire import next_poll, request_body, retry_after
from pyexec_client._errors import error_for
from pyexec_client._executions import ServerSentEvents, feed_events, parse_execution
from pyexec_client._result import MalformedResponse

SUCCESS: Dict[str, Any] = {"result": {"a": 1}, "stdout": "", "stderr": "", "returncode": 0, "outcome": "success"}


def answering(body: Dict[str, Any]) -> Client:
    return Client("http://pyexec.test", transport=httpx.MockTransport(lambda _: httpx.Response(200, json=body)))


def test_files_are_read_with_their_bytes() -> None:
    png = b"\x89PNG\r\n\x1a\n"
    files = [{"name": "plot.png", "size": len(png), "media_type": "image/png", "content_base64": base64.b64encode(png).decode()}]
    with answering({**SUCCESS, "files": files}) as client:
        answer = client.run("def main():\n    return {}\n")
    assert answer.files == [File(name="plot.png", size=8, media_type="image/png", data=png)]


def test_a_malformed_answer_is_a_pyexec_error() -> None:
    for broken in ({**SUCCESS, "result": [1]}, {"stdout": ""}, {**SUCCESS, "files": [{"name": "x", "content_base64": "!!"}]}):
        with answering(broken) as client, pytest.raises(PyexecError, match="not a run's result"):
            client.run("def main():\n    return {}\n")


@pytest.mark.parametrize("value, seconds", [("1", 1.0), (" 2.5 ", 2.5), ("-3", 0.0), ("soon", None), (None, None)])
def test_retry_after_is_seconds(value: Any, seconds: Any) -> None:
    assert retry_after(value) == seconds


def test_only_the_limits_that_are_set_are_sent() -> None:
    assert request_body("s", Limits(timeout_seconds=2, memory_mb=None)) == {"script": "s", "limits": {"timeout_seconds": 2}}
    assert request_body("s", None) == {"script": "s"}
    with pytest.raises(TypeError):
        request_body(b"def main(): ...", None)  # type: ignore[arg-type]


def events_of(stream: bytes, chunk_size: int) -> List[Tuple[str, str]]:
    reader = ServerSentEvents()
    events = []
    for start in range(0, len(stream), chunk_size):
        events += reader.feed(stream[start : start + chunk_size])
    return events + reader.end()


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 1000])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_server_sent_events_are_read_whatever_the_chunks_and_line_endings(chunk_size: int, newline: str) -> None:
    lines = [
        ": a keep-alive comment",
        "event: stdout",
        'data: {"text": "caf\u00e9 \u2028"}',
        "",
        "event:state",
        "data:first",
        "data: second",
        "id: 7",
        "",
        "event: ignored without data",
        "",
        "data: unnamed",
        "",
        "event: result",
        "data: last",
        "",
    ]
    stream = newline.join(lines).encode() + newline.encode()
    assert events_of(stream, chunk_size) == [
        ("stdout", '{"text": "caf\u00e9 \u2028"}'),
        ("state", "first\nsecond"),
        ("message", "unnamed"),
        ("result", "last"),
    ]


def test_an_event_the_stream_ends_in_the_middle_of_is_dropped() -> None:
    assert events_of(b"event: state\ndata: {}\n", 1) == []


def test_events_are_typed_and_unknown_ones_skipped() -> None:
    stream = (
        b'event: state\ndata: {"state": "queued"}\n\n'
        b'event: progress\ndata: {"percent": 5}\n\n'
        b'event: stderr\ndata: {"text": "warn\\n"}\n\n'
        b'event: result\ndata: {"id": "a1", "state": "failed", "created_at": "2026-01-31T12:00:00Z", '
        b'"reason": "Cancelled"}\n\n'
    )
    execution = Execution("a1", "failed", datetime(2026, 1, 31, 12, tzinfo=timezone.utc), reason="Cancelled")
    assert feed_events(ServerSentEvents(), stream) == [
        StateEvent("queued"),
        OutputEvent("stderr", "warn\n"),
        ResultEvent(execution),
    ]
    with pytest.raises(MalformedResponse):
        feed_events(ServerSentEvents(), b"event: stdout\ndata: not json\n\n")


def test_an_execution_is_read_with_its_times_and_answer() -> None:
    body = {
        "id": "a1",
        "state": "succeeded",
        "created_at": "2026-01-31T12:00:00.250Z",
        "started_at": "2026-01-31T12:00:00.252+01:00",
        "finished_at": "2026-01-31T12:00:00.262123456Z",
        "http_status": 200,
        "response": SUCCESS,
        "future_field": 1,
    }
    execution = parse_execution(body)
    assert execution.created_at == datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=timezone.utc)
    assert execution.started_at == datetime(2026, 1, 31, 11, 0, 0, 252000, tzinfo=timezone.utc)
    assert execution.finished_at == datetime(2026, 1, 31, 12, 0, 0, 262123, tzinfo=timezone.utc)
    assert execution.finished and execution.result().result == {"a": 1}
    for broken in ({**body, "created_at": "yesterday"}, {**body, "http_status": "200"}, {"id": "a1"}):
        with pytest.raises(MalformedResponse):
            parse_execution(broken)


def test_a_wait_polls_until_the_end_each_poll_at_most_the_cap() -> None:
    polls: List[str] = []
    created = {"id": "a1", "created_at": "2026-01-31T12:00:00Z"}

    def answer(request: httpx.Request) -> httpx.Response:
        polls.append(request.url.params["wait"])
        state = "succeeded" if len(polls) == 3 else "running"
        return httpx.Response(200, json={**created, "state": state, "http_status": 200, "response": SUCCESS})

    with Client("http://pyexec.test", transport=httpx.MockTransport(answer)) as client:
        assert client.wait("a1").result().result == {"a": 1}
    assert [float(poll) for poll in polls] == [WAIT_POLL_SECONDS] * 3
    assert next_poll(None, 5.0) == WAIT_POLL_SECONDS
    assert next_poll(12.5, 10.0) == 2.5
    assert next_poll(10.0, 12.5) == 0.0


def test_files_are_sent_as_text_or_base64() -> None:
    body = request_body("s", None, {"a.txt": "text", "b.bin": b"\x00\xff"})
    assert body["files"] == {"a.txt": "text", "b.bin": {"base64": "AP8="}}
    with pytest.raises(TypeError):
        request_body("s", None, {"c": 3})  # type: ignore[dict-item]


def test_404_and_409_are_their_own_errors() -> None:
    conflict = error_for(409, {"error": "already finished", "id": "a1", "state": "succeeded"})
    assert isinstance(conflict, AlreadyFinishedError) and (conflict.id, conflict.state) == ("a1", "succeeded")
    assert isinstance(error_for(404, {"error": "Execution x not found"}), NotFoundError)
    assert isinstance(conflict, InvalidRequestError)
