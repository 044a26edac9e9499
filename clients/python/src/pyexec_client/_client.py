"""The synchronous and asynchronous clients. Both build the same requests, read the answers with
the same functions (``_wire.py``), and retry a busy service the same way; only the I/O differs."""

from __future__ import annotations

import itertools
import os
import time
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Type, TypeVar

import anyio  # comes with httpx; sleeps under asyncio and trio alike
import httpx

from ._errors import BusyError, PyexecError, TransportError, error_for
from ._executions import Execution, ExecutionEvent, ExecutionPage, ResultEvent, ServerSentEvents, feed_events
from ._result import ExecutionResult, LimitsLike, MalformedResponse
from ._wire import (
    FilesLike,
    execution_path,
    json_body,
    next_poll,
    page_params,
    read_answer,
    read_execution,
    read_page,
    request_body,
    stream_ended,
)

#: The environment variable the token is read from when none is given.
TOKEN_ENV = "PYEXEC_TOKEN"
#: The environment variable the service's address is read from when none is given.
URL_ENV = "PYEXEC_URL"
#: Where ``pyexec serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds to wait for an answer: above the service's largest wall-clock limit (60 s), with room
#: for a queue.
DEFAULT_TIMEOUT = 120.0
#: Retries of a run the service answered 429 (busy) to.
DEFAULT_MAX_RETRIES = 3
#: The longest wait before one retry, whatever ``Retry-After`` says.
DEFAULT_MAX_RETRY_WAIT = 30.0
#: The wait before a retry when the service gave no ``Retry-After``.
DEFAULT_RETRY_WAIT = 1.0
#: How long an event stream may stay silent before it counts as lost; the service sends a
#: keep-alive comment every 15 s while the script writes nothing.
STREAM_IDLE_TIMEOUT = 60.0
#: Executions a listing asks for when not told: the service's default page.
DEFAULT_PAGE_SIZE = 50

_Self = TypeVar("_Self", bound="_Settings")
_T = TypeVar("_T")


class _Settings:
    """What both clients are configured with."""

    def __init__(
        self,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
    ):
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._headers = {"Accept": "application/json", "User-Agent": "pyexec-client"}
        if token:
            self._headers["Authorization"] = f"Bearer {token.strip()}"

    def _retry_wait(self, busy: BusyError) -> float:
        wait = busy.retry_after if busy.retry_after is not None else DEFAULT_RETRY_WAIT
        return max(0.0, min(wait, self.max_retry_wait))

    def _poll_timeout(self, poll: float) -> httpx.Timeout:
        """A long poll's timeout: the request's own, plus the time the service may hold it."""
        return httpx.Timeout(self.timeout + poll)

    def _stream_timeout(self) -> httpx.Timeout:
        """An event stream's timeout: reads may wait for the next keep-alive."""
        return httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_IDLE_TIMEOUT))


class Client(_Settings):
    """A client of a pyexec service.

    ``base_url`` is the service's address (default: ``$PYEXEC_URL``, else
    ``http://127.0.0.1:8080``); ``token`` its bearer token (default: ``$PYEXEC_TOKEN``; none
    when unset). ``timeout`` bounds each request in seconds. A run the service answers 429 (busy)
    to is retried up to ``max_retries`` times, each after the ``Retry-After`` it gave (at most
    ``max_retry_wait`` seconds); then :class:`BusyError` is raised.

    Use it as a context manager, or call :meth:`close`::

        with Client("http://127.0.0.1:8080") as client:
            print(client.run("def main():\\n    return {'x': 1}\\n").result)
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        *,
        transport: Optional[httpx.BaseTransport] = None,
    ):
        super().__init__(base_url, token, timeout, max_retries, max_retry_wait)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport)

    def run(self, script: str, limits: Optional[LimitsLike] = None) -> ExecutionResult:
        """Runs ``script`` (Python source defining ``main()``) and returns the service's answer.

        Returns an :class:`ExecutionResult` whenever the script ran, including when it raised or
        hit a limit (check ``.ok`` or call ``.raise_for_outcome()``). Raises a
        :class:`PyexecError` subclass when the service refused or could not run it.
        """
        return self._send("POST", "/execute", read_answer, json=request_body(script, limits))

    def submit(
        self, script: str, limits: Optional[LimitsLike] = None, files: Optional[FilesLike] = None
    ) -> Execution:
        """Submits ``script`` to run in the background and returns its execution at once
        (``queued``, with its ``id``); :meth:`wait`, :meth:`stream` or :meth:`get` follow it.

        ``limits`` are :meth:`run`'s; ``files`` maps plain file names to their content (``str``
        as text, ``bytes`` as is), which the script finds in its working directory. A request the
        service refuses raises what :meth:`run` raises (:class:`LimitsRefusedError`,
        :class:`TooLargeError`, ...); a script it refuses (no ``main()``, a syntax error) is
        accepted, fails, and :meth:`Execution.result` raises what :meth:`run` would have. A 429
        (too many unfinished executions) is retried as :meth:`run` retries it.
        """
        return self._send("POST", "/executions", read_execution, json=request_body(script, limits, files))

    def get(self, id: str) -> Execution:
        """The execution ``id`` now. Raises :class:`NotFoundError` for an unknown id or one the
        service removed."""
        return self._send("GET", execution_path(id), read_execution)

    def wait(self, id: str, timeout: Optional[float] = None) -> Execution:
        """Waits until execution ``id`` finishes, or ``timeout`` seconds pass (``None``: no
        limit), and returns it as it is then: check ``.finished``, then call ``.result()`` for
        the answer :meth:`run` would have returned.

        Each request asks the service to hold it until the end (at most
        :data:`WAIT_POLL_SECONDS`, or less when the service caps it lower) and is repeated until
        then.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poll = next_poll(deadline, time.monotonic())
            execution = self._send(
                "GET", execution_path(id), read_execution, params={"wait": poll}, timeout=self._poll_timeout(poll)
            )
            if execution.finished or (deadline is not None and time.monotonic() >= deadline):
                return execution

    def cancel(self, id: str) -> Execution:
        """Cancels execution ``id`` (its sandbox is killed) and returns it, ``cancelled``.

        Raises :class:`AlreadyFinishedError` when it had already finished (its ``.state`` says
        how), :class:`NotFoundError` for an unknown id.
        """
        return self._send("DELETE", execution_path(id), read_execution)

    def stream(self, id: str) -> Iterator[ExecutionEvent]:
        """Yields execution ``id``'s events as they happen: :class:`StateEvent` (``queued``,
        ``running``), :class:`OutputEvent` for each chunk of stdout or stderr, then one
        :class:`ResultEvent` with the finished execution, and ends. A late caller first gets all
        the output so far.

        Raises :class:`NotFoundError` for an unknown id, :class:`TransportError` when the stream
        breaks or ends before the result.
        """
        path = f"{execution_path(id)}/events"
        headers = {"Accept": "text/event-stream"}
        try:
            with self._http.stream("GET", path, headers=headers, timeout=self._stream_timeout()) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_for(response.status_code, json_body(response))
                reader = ServerSentEvents()
                for chunk in itertools.chain(response.iter_bytes(), [None]):
                    for event in feed_events(reader, chunk):
                        yield event
                        if isinstance(event, ResultEvent):
                            return
        except httpx.HTTPError as err:
            raise TransportError(f"GET {self.base_url}{path}: {err}") from err
        except MalformedResponse as err:
            raise PyexecError(f"the event stream of execution {id} is malformed: {err}") from err
        raise stream_ended(id)

    def list(self, limit: int = DEFAULT_PAGE_SIZE, before: Optional[str] = None) -> ExecutionPage:
        """One page of executions, newest first, without their answers: ``limit`` of them (1 to
        500), older than the cursor ``before`` (the previous page's ``next``)."""
        return self._send("GET", "/executions", read_page, params=page_params(limit, before))

    def iter_executions(self, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Execution]:
        """Every execution the service keeps, newest first, read ``page_size`` at a time."""
        before: Optional[str] = None
        while True:
            page = self.list(page_size, before)
            yield from page.executions
            if page.next is None:
                return
            before = page.next

    def _send(self, method: str, path: str, read: Callable[[httpx.Response], _T], **options: Any) -> _T:
        """Sends one request and reads its answer with ``read``; retries a 429 (busy)."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **options)
            except httpx.HTTPError as err:
                raise TransportError(f"{method} {self.base_url}{path}: {err}") from err
            try:
                return read(response)
            except BusyError as busy:
                if attempt >= self.max_retries:
                    raise
                attempt += 1
                time.sleep(self._retry_wait(busy))

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()


class AsyncClient(_Settings):
    """The asynchronous twin of :class:`Client` (asyncio or trio), with the same settings::

    async with AsyncClient("http://127.0.0.1:8080") as client:
        answer = await client.run("def main():\\n    return {'x': 1}\\n")
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        *,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ):
        super().__init__(base_url, token, timeout, max_retries, max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def run(self, script: str, limits: Optional[LimitsLike] = None) -> ExecutionResult:
        """Runs ``script`` and returns the service's answer; see :meth:`Client.run`."""
        return await self._send("POST", "/execute", read_answer, json=request_body(script, limits))

    async def submit(
        self, script: str, limits: Optional[LimitsLike] = None, files: Optional[FilesLike] = None
    ) -> Execution:
        """Submits ``script`` to run in the background; see :meth:`Client.submit`."""
        return await self._send("POST", "/executions", read_execution, json=request_body(script, limits, files))

    async def get(self, id: str) -> Execution:
        """The execution ``id`` now; see :meth:`Client.get`."""
        return await self._send("GET", execution_path(id), read_execution)

    async def wait(self, id: str, timeout: Optional[float] = None) -> Execution:
        """Waits until execution ``id`` finishes or ``timeout`` seconds pass; see
        :meth:`Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poll = next_poll(deadline, time.monotonic())
            execution = await self._send(
                "GET", execution_path(id), read_execution, params={"wait": poll}, timeout=self._poll_timeout(poll)
            )
            if execution.finished or (deadline is not None and time.monotonic() >= deadline):
                return execution

    async def cancel(self, id: str) -> Execution:
        """Cancels execution ``id``; see :meth:`Client.cancel`."""
        return await self._send("DELETE", execution_path(id), read_execution)

    async def stream(self, id: str) -> AsyncIterator[ExecutionEvent]:
        """Execution ``id``'s events as they happen, up to its result; see :meth:`Client.stream`::

        async for event in client.stream(execution.id):
            ...
        """
        path = f"{execution_path(id)}/events"
        headers = {"Accept": "text/event-stream"}
        try:
            async with self._http.stream("GET", path, headers=headers, timeout=self._stream_timeout()) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_for(response.status_code, json_body(response))
                reader = ServerSentEvents()
                async for chunk in _then_end(response.aiter_bytes()):
                    for event in feed_events(reader, chunk):
                        yield event
                        if isinstance(event, ResultEvent):
                            return
        except httpx.HTTPError as err:
            raise TransportError(f"GET {self.base_url}{path}: {err}") from err
        except MalformedResponse as err:
            raise PyexecError(f"the event stream of execution {id} is malformed: {err}") from err
        raise stream_ended(id)

    async def list(self, limit: int = DEFAULT_PAGE_SIZE, before: Optional[str] = None) -> ExecutionPage:
        """One page of executions, newest first; see :meth:`Client.list`."""
        return await self._send("GET", "/executions", read_page, params=page_params(limit, before))

    async def iter_executions(self, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Execution]:
        """Every execution the service keeps, newest first, read ``page_size`` at a time."""
        before: Optional[str] = None
        while True:
            page = await self.list(page_size, before)
            for execution in page.executions:
                yield execution
            if page.next is None:
                return
            before = page.next

    async def _send(self, method: str, path: str, read: Callable[[httpx.Response], _T], **options: Any) -> _T:
        """Sends one request and reads its answer with ``read``; retries a 429 (busy)."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **options)
            except httpx.HTTPError as err:
                raise TransportError(f"{method} {self.base_url}{path}: {err}") from err
            try:
                return read(response)
            except BusyError as busy:
                if attempt >= self.max_retries:
                    raise
                attempt += 1
                await anyio.sleep(self._retry_wait(busy))

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.aclose()


async def _then_end(chunks: AsyncIterator[bytes]) -> AsyncIterator[Optional[bytes]]:
    """The chunks, then ``None`` for the end of the stream."""
    async for chunk in chunks:
        yield chunk
    yield None
