"""The synchronous and asynchronous clients. Both build the same request, read the answer with
the same functions, and retry a busy service the same way; only the I/O differs."""

from __future__ import annotations

import email.utils
import json
import os
import time
from types import TracebackType
from typing import Any, Dict, Mapping, Optional, Type, TypeVar

import anyio  # comes with httpx; sleeps under asyncio and trio alike
import httpx

from ._errors import BusyError, PyexecError, TransportError, error_for
from ._result import ExecutionResult, LimitsLike, MalformedResponse, limits_json, parse_result

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

_Self = TypeVar("_Self", bound="_Settings")


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


def request_body(script: str, limits: Optional[LimitsLike]) -> Dict[str, Any]:
    """The JSON body of ``POST /execute``."""
    if not isinstance(script, str):
        raise TypeError(f"script must be a str, not {type(script).__name__}")
    body: Dict[str, Any] = {"script": script}
    limits_object = limits_json(limits)
    if limits_object:
        body["limits"] = limits_object
    return body


def read_answer(response: httpx.Response) -> ExecutionResult:
    """The result of a 200, or the exception its status and body call for."""
    body = _json_body(response)
    if response.status_code != 200:
        raise error_for(response.status_code, body, retry_after(response.headers.get("Retry-After")))
    try:
        return parse_result(body)
    except MalformedResponse as err:
        raise PyexecError(f"the service's answer is not a run's result: {err}", 200, body) from err


def retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_body(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": response.text[:1000]} if response.text else {}
    return body if isinstance(body, dict) else {"error": f"unexpected body: {str(body)[:200]}"}


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
        body = request_body(script, limits)
        attempt = 0
        while True:
            try:
                response = self._http.post("/execute", json=body)
            except httpx.HTTPError as err:
                raise TransportError(f"POST {self.base_url}/execute: {err}") from err
            try:
                return read_answer(response)
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
        body = request_body(script, limits)
        attempt = 0
        while True:
            try:
                response = await self._http.post("/execute", json=body)
            except httpx.HTTPError as err:
                raise TransportError(f"POST {self.base_url}/execute: {err}") from err
            try:
                return read_answer(response)
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
