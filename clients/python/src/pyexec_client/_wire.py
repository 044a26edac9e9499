"""What goes over the wire: the requests both clients build and the readers of the service's
answers, each turning a response into a typed value or the exception its status calls for. No
I/O; the clients send and receive."""

from __future__ import annotations

import base64
import email.utils
import json
import time
from typing import Any, Dict, Mapping, Optional, Union
from urllib.parse import quote

import httpx

from ._errors import PyexecError, TransportError, answer_for, error_for
from ._executions import Execution, ExecutionPage, parse_execution, parse_page
from ._result import ExecutionResult, LimitsLike, MalformedResponse, limits_json

#: The longest ``?wait=`` one poll of :meth:`Client.wait` asks for: the service's default cap
#: (``--executions-max-wait-seconds``). A service with a lower cap answers sooner and is asked again.
WAIT_POLL_SECONDS = 60.0
#: What :meth:`Client.submit` takes as ``files``: name to content, ``str`` sent as text and
#: ``bytes`` as base64.
FilesLike = Mapping[str, Union[str, bytes]]


def request_body(script: str, limits: Optional[LimitsLike], files: Optional[FilesLike] = None) -> Dict[str, Any]:
    """The JSON body of ``POST /execute`` and ``POST /executions``."""
    if not isinstance(script, str):
        raise TypeError(f"script must be a str, not {type(script).__name__}")
    body: Dict[str, Any] = {"script": script}
    limits_object = limits_json(limits)
    if limits_object:
        body["limits"] = limits_object
    if files:
        body["files"] = files_json(files)
    return body


def files_json(files: FilesLike) -> Dict[str, Union[str, Dict[str, str]]]:
    """The ``files`` object of a request: text as it is, bytes as ``{"base64": ...}``."""
    encoded: Dict[str, Union[str, Dict[str, str]]] = {}
    for name, content in files.items():
        if isinstance(content, str):
            encoded[name] = content
        elif isinstance(content, (bytes, bytearray, memoryview)):
            encoded[name] = {"base64": base64.b64encode(bytes(content)).decode("ascii")}
        else:
            raise TypeError(f"file {name!r} must be str or bytes, not {type(content).__name__}")
    return encoded


def read_answer(response: httpx.Response) -> ExecutionResult:
    """The result of a 200, or the exception its status and body call for."""
    return answer_for(response.status_code, json_body(response), retry_after(response.headers.get("Retry-After")))


def execution_path(id: str) -> str:
    """``/executions/{id}``, the id escaped so that it stays one path segment."""
    if not isinstance(id, str) or not id:
        raise ValueError(f"an execution id is a non-empty str, not {id!r}")
    return f"/executions/{quote(id, safe='')}"


def read_execution(response: httpx.Response) -> Execution:
    """The execution a 200 or 202 carries, or the exception another status calls for."""
    body = _success_body(response)
    try:
        return parse_execution(body)
    except MalformedResponse as err:
        raise PyexecError(f"the service's answer is not an execution: {err}", response.status_code, body) from err


def read_page(response: httpx.Response) -> ExecutionPage:
    """The page of executions a 200 carries, or the exception another status calls for."""
    body = _success_body(response)
    try:
        return parse_page(body)
    except MalformedResponse as err:
        raise PyexecError(f"the service's answer is not a page of executions: {err}", response.status_code, body) from err


def page_params(limit: int, before: Optional[str]) -> Dict[str, Union[str, int]]:
    """The query of ``GET /executions``."""
    params: Dict[str, Union[str, int]] = {"limit": limit}
    if before is not None:
        params["before"] = before
    return params


def next_poll(deadline: Optional[float], now: float) -> float:
    """Seconds the next poll of a wait asks the service to hold it: at most
    :data:`WAIT_POLL_SECONDS`, and no longer than is left before ``deadline`` (``None``: none)."""
    if deadline is None:
        return WAIT_POLL_SECONDS
    return max(0.0, min(WAIT_POLL_SECONDS, deadline - now))


def _success_body(response: httpx.Response) -> Mapping[str, Any]:
    body = json_body(response)
    if response.status_code not in (200, 202):
        raise error_for(response.status_code, body, retry_after(response.headers.get("Retry-After")))
    return body


def stream_ended(id: str) -> TransportError:
    """The error of an event stream that ended without the execution's result."""
    return TransportError(f"the event stream of execution {id} ended before its result")


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


def json_body(response: httpx.Response) -> Mapping[str, Any]:
    """The decoded body of an answer; an object with its text as ``error`` when it is not JSON."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": response.text[:1000]} if response.text else {}
    return body if isinstance(body, dict) else {"error": f"unexpected body: {str(body)[:200]}"}
