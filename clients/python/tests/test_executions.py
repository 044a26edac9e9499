"""Executions through the client (submit, get, wait, cancel, stream, list), synchronous and
asynchronous, against a real `pyexec serve` with real nsjail."""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator, List, Type

import pytest

from pyexec_client import (
    AlreadyFinishedError,
    AsyncClient,
    Client,
    Execution,
    ExecutionEvent,
    ExecutionResult,
    InvalidMainError,
    InvalidRequestError,
    Limits,
    LimitsRefusedError,
    NoAnswerError,
    NoMainError,
    NotFoundError,
    OutputEvent,
    ResultEvent,
    ScriptRejectedError,
    ScriptSyntaxError,
    StateEvent,
)
from server import Server
from test_contract import PANDAS

#: Runs until it is cancelled (or its time limit ends it).
SLEEPS = "import time\ndef main():\n    time.sleep(60)\n    return {}\n"
#: Prints, sleeps, prints: two chunks of stdout with time between them.
PRINTS_TWICE = "import time\ndef main():\n    print('one')\n    time.sleep(1)\n    print('two')\n    return {'n': 2}\n"
#: An id the service never gave.
UNKNOWN_ID = "0" * 32


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


@pytest.fixture
def sleeping(client: Client) -> Iterator[Execution]:
    """A submitted execution of SLEEPS, cancelled after the test if it is still unfinished."""
    execution = client.submit(SLEEPS)
    yield execution
    try:
        client.cancel(execution.id)
    except AlreadyFinishedError:
        pass


def without_run_identity(answer: ExecutionResult) -> ExecutionResult:
    """The answer without what differs between two runs of the same script."""
    return dataclasses.replace(answer, id=None, duration_ms=None)


def wait_until_running(client: Client, id: str) -> None:
    """Follows the execution's events until its sandbox started."""
    for event in client.stream(id):
        assert not isinstance(event, ResultEvent), "it finished before it was seen running"
        if event == StateEvent("running"):
            return


def test_a_submission_is_queued_at_once_with_its_id_and_location(client: Client) -> None:
    execution = client.submit(PANDAS)
    assert execution.state in ("queued", "running")
    assert execution.location == f"/executions/{execution.id}"
    assert execution.created_at.tzinfo is not None
    assert (execution.finished, execution.http_status, execution.response) == (False, None, None)
    client.wait(execution.id)


def test_a_waited_execution_answers_what_run_answers(client: Client) -> None:
    submitted = client.submit(PANDAS)
    finished = client.wait(submitted.id)
    assert (finished.id, finished.state, finished.http_status, finished.finished) == (submitted.id, "succeeded", 200, True)
    assert finished.started_at is not None and finished.finished_at is not None
    answer = finished.result()
    assert answer.result == {"sum_A": 6, "mean_B": 5.0}
    assert answer.id == submitted.id
    assert without_run_identity(answer) == without_run_identity(client.run(PANDAS))
    assert client.get(submitted.id) == finished


def test_a_script_that_raises_is_failed_with_its_answer(client: Client) -> None:
    finished = client.wait(client.submit("def main():\n    return {'x': 1 / 0}\n").id)
    assert (finished.state, finished.http_status) == ("failed", 200)
    answer = finished.result()
    assert (answer.ok, answer.outcome, answer.error) == (False, "exception", "ZeroDivisionError: division by zero")


@pytest.mark.parametrize(
    "script, refusal",
    [("x = 1\n", NoMainError), ("def main():\n    return {'a': }\n", ScriptSyntaxError), ("main = 3\n", InvalidMainError)],
)
def test_a_script_the_service_refuses_is_accepted_and_its_result_raises_what_run_raises(
    client: Client, script: str, refusal: Type[ScriptRejectedError]
) -> None:
    finished = client.wait(client.submit(script).id)
    assert (finished.state, finished.http_status) == ("failed", 400)
    with pytest.raises(refusal) as raised:
        finished.result()
    with pytest.raises(refusal) as by_run:
        client.run(script)
    assert raised.value.message == by_run.value.message


def test_limits_above_the_maximum_are_refused_at_submission(client: Client) -> None:
    with pytest.raises(LimitsRefusedError):
        client.submit(PANDAS, limits=Limits(memory_mb=1_000_000))


def test_files_are_passed_to_the_script(client: Client) -> None:
    script = (
        "def main():\n"
        "    text = open('data.csv').read()\n"
        "    blob = open('blob.bin', 'rb').read()\n"
        "    return {'text': text, 'blob': list(blob)}\n"
    )
    files = {"data.csv": "a,b\n1,2\n", "blob.bin": b"\x00\xff"}
    answer = client.wait(client.submit(script, files=files).id).result()
    assert answer.result == {"text": "a,b\n1,2\n", "blob": [0, 255]}


def test_a_wait_shorter_than_the_script_returns_it_unfinished(client: Client, sleeping: Execution) -> None:
    started = time.monotonic()
    execution = client.wait(sleeping.id, timeout=0.5)
    elapsed = time.monotonic() - started
    assert execution.state in ("queued", "running")
    assert 0.5 <= elapsed < 10
    with pytest.raises(NoAnswerError, match="has not finished"):
        execution.result()


def test_a_cancelled_execution_is_cancelled_and_cannot_be_cancelled_again(client: Client, sleeping: Execution) -> None:
    wait_until_running(client, sleeping.id)
    cancelled = client.cancel(sleeping.id)
    assert (cancelled.id, cancelled.state, cancelled.finished, cancelled.http_status) == (sleeping.id, "cancelled", True, None)
    assert cancelled.reason
    assert client.wait(sleeping.id) == cancelled
    with pytest.raises(NoAnswerError, match="cancelled without an answer"):
        cancelled.result()
    with pytest.raises(AlreadyFinishedError) as raised:
        client.cancel(sleeping.id)
    assert (raised.value.status, raised.value.id, raised.value.state) == (409, sleeping.id, "cancelled")


def test_a_stream_gives_the_output_as_it_happens_then_the_result(client: Client) -> None:
    execution = client.submit(PRINTS_TWICE)
    events: List[ExecutionEvent] = []
    arrived: List[float] = []
    for event in client.stream(execution.id):
        events.append(event)
        arrived.append(time.monotonic())
    states = [event for event in events if isinstance(event, StateEvent)]
    outputs = [(i, event) for i, event in enumerate(events) if isinstance(event, OutputEvent)]
    assert states and states[-1] == StateEvent("running")
    assert [event for _, event in outputs] == [OutputEvent("stdout", "one\n"), OutputEvent("stdout", "two\n")]
    # The script sleeps a second between its prints: the first came before the second was written.
    assert arrived[outputs[1][0]] - arrived[outputs[0][0]] >= 0.5
    last = events[-1]
    assert isinstance(last, ResultEvent)
    assert (last.execution.id, last.execution.state) == (execution.id, "succeeded")
    answer = last.execution.result()
    assert (answer.result, answer.stdout) == ({"n": 2}, "one\ntwo\n")


def test_a_stream_of_a_finished_execution_gives_its_output_then_the_result(client: Client) -> None:
    finished = client.wait(client.submit(PRINTS_TWICE).id)
    events = list(client.stream(finished.id))
    assert "".join(event.text for event in events if isinstance(event, OutputEvent)) == "one\ntwo\n"
    assert events[-1] == ResultEvent(finished)


def test_listing_pages_newest_first(client: Client) -> None:
    ids = [client.submit(f"def main():\n    return {{'n': {n}}}\n").id for n in range(3)]
    for id in ids:
        client.wait(id)
    first = client.list(limit=2)
    assert [execution.id for execution in first.executions] == ids[::-1][:2]
    assert first.next is not None
    second = client.list(limit=2, before=first.next)
    assert second.executions[0].id == ids[0]
    assert all(execution.response is None and execution.finished for execution in first.executions)
    newest = [execution.id for _, execution in zip(range(3), client.iter_executions(page_size=2))]
    assert newest == ids[::-1]


def test_a_listing_limit_out_of_range_is_an_invalid_request(client: Client) -> None:
    with pytest.raises(InvalidRequestError, match="limit"):
        client.list(limit=0)


@pytest.mark.parametrize("id", [UNKNOWN_ID, "../execute"])
def test_an_unknown_id_is_not_found(client: Client, id: str) -> None:
    for call in (client.get, client.wait, client.cancel, lambda id: list(client.stream(id))):
        with pytest.raises(NotFoundError) as raised:
            call(id)
        assert raised.value.status == 404


@pytest.mark.anyio
async def test_the_async_client_submits_waits_streams_and_cancels(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        finished = await client.wait((await client.submit(PANDAS)).id)
        assert finished.result().result == {"sum_A": 6, "mean_B": 5.0}

        streamed = await client.submit(PRINTS_TWICE)
        events = [event async for event in client.stream(streamed.id)]
        assert [event for event in events if isinstance(event, OutputEvent)] == [
            OutputEvent("stdout", "one\n"),
            OutputEvent("stdout", "two\n"),
        ]
        last = events[-1]
        assert isinstance(last, ResultEvent) and last.execution.result().result == {"n": 2}

        sleeping = await client.submit(SLEEPS)
        unfinished = await client.wait(sleeping.id, timeout=0.2)
        assert not unfinished.finished
        assert (await client.cancel(sleeping.id)).state == "cancelled"
        with pytest.raises(AlreadyFinishedError):
            await client.cancel(sleeping.id)
        page = await client.list(limit=1)
        assert [execution.id for execution in page.executions] == [sleeping.id]
        with pytest.raises(NotFoundError):
            await client.get(UNKNOWN_ID)
