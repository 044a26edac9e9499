"""The exceptions of the client, one for each way the service can refuse or fail a run, and the
pure function that picks one from a response's status and body.

A script that ran and failed (``main()`` raised, a timeout, the memory limit) is not an exception
here: the service answers 200 with an ``outcome``, and :meth:`ExecutionResult.raise_for_outcome`
raises :class:`ExecutionFailedError` when the caller wants one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ._result import ExecutionResult, MalformedResponse, parse_result

if TYPE_CHECKING:
    from ._executions import Execution

#: The exact error of a script without ``main()`` (or an empty one).
NO_MAIN_MESSAGE = "Script must contain a 'main()' function."

_COMPILE_ERROR = re.compile(r"^(SyntaxError|IndentationError|TabError): ")
_POSITION = re.compile(r"\(line (\d+), column (\d+)\)$")
# The limits' own refusals ("limits.memory_mb may be at most ...") and an unreadable "limits".
_LIMITS_REFUSED = re.compile(r'^(limits\.|"limits" is invalid)')


class PyexecError(Exception):
    """Base of every error this client raises.

    ``status`` is the HTTP status (``None`` when no response came), ``message`` the service's
    ``error`` text, ``body`` the decoded response body (empty when there was none).
    """

    def __init__(self, message: str, status: Optional[int] = None, body: Optional[Mapping[str, Any]] = None):
        super().__init__(message if status is None else f"HTTP {status}: {message}")
        self.message = message
        self.status = status
        self.body: Mapping[str, Any] = body or {}


class TransportError(PyexecError):
    """The service could not be reached or did not answer in time (the cause is chained)."""


class ScriptRejectedError(PyexecError):
    """HTTP 400 about the script itself: the service did not run it, or refused what ``main()``
    returned. ``outcome`` is the one-word reason (``no_main``, ``syntax_error``, ``invalid_main``,
    ``not_a_dict``, ``unserializable``, ``result_too_large``); ``stdout`` and ``stderr`` hold what
    the script printed when it ran."""

    def __init__(self, message: str, status: int, body: Mapping[str, Any], outcome: str):
        super().__init__(message, status, body)
        self.outcome = outcome
        self.stdout: str = str(body.get("stdout", ""))
        self.stderr: str = str(body.get("stderr", ""))


class NoMainError(ScriptRejectedError):
    """The script is empty or defines no ``main()`` (HTTP 400, the contract's exact body)."""


class ScriptSyntaxError(ScriptRejectedError):
    """The script does not compile (HTTP 400). ``line`` and ``column`` locate the error when the
    compiler gave a position."""

    def __init__(self, message: str, status: int, body: Mapping[str, Any]):
        super().__init__(message, status, body, "syntax_error")
        position = _POSITION.search(message)
        self.line: Optional[int] = int(position.group(1)) if position else None
        self.column: Optional[int] = int(position.group(2)) if position else None


class InvalidMainError(ScriptRejectedError):
    """``main`` exists but cannot be called as ``main()`` (not callable, takes arguments, async)."""


class ResultRejectedError(ScriptRejectedError):
    """``main()`` ran but its value cannot be returned: not a dict (``not_a_dict``), not
    convertible to JSON (``unserializable``, the message names the key path), or larger than the
    ``result_bytes`` limit (``result_too_large``)."""


class InvalidRequestError(PyexecError):
    """HTTP 400 (or another 4xx) about the request rather than the script: a body the service
    cannot read, a wrong content type, an unknown route."""


class NotFoundError(InvalidRequestError):
    """HTTP 404: no execution has this id, or it was removed (a finished execution is kept for the
    service's ``--executions-keep-seconds``)."""


class AlreadyFinishedError(InvalidRequestError):
    """HTTP 409: the execution to cancel had already finished. ``id`` names it and ``state`` is
    the state it finished in (``succeeded``, ``failed`` or ``cancelled``)."""

    def __init__(self, message: str, status: int, body: Mapping[str, Any]):
        super().__init__(message, status, body)
        self.id: Optional[str] = body.get("id") if isinstance(body.get("id"), str) else None
        self.state: Optional[str] = body.get("state") if isinstance(body.get("state"), str) else None


class NoAnswerError(PyexecError):
    """Raised by :meth:`Execution.result`: the execution has no answer to read, because it has
    not finished, or it ended without one (cancelled, or cut off by a stop of the service; its
    ``reason`` says which). ``execution`` is the execution as it was read."""

    def __init__(self, execution: "Execution"):
        if execution.finished:
            message = f"execution {execution.id} {execution.state} without an answer"
            if execution.reason:
                message += f": {execution.reason}"
        else:
            message = f"execution {execution.id} has not finished (it is {execution.state})"
        super().__init__(message)
        self.execution = execution


class LimitsRefusedError(InvalidRequestError):
    """HTTP 400: a requested limit is above the server's maximum, below its minimum, or unknown.
    The message names the limit."""


class UnauthorizedError(PyexecError):
    """The API guard refused the caller: no or a wrong bearer token (401), an ``Origin`` the
    service does not allow (403), or a ``Host`` that is not a loopback name while the service
    listens on loopback (421)."""


class TooLargeError(PyexecError):
    """HTTP 413: the request body or the script is larger than the service accepts."""


class BusyError(PyexecError):
    """HTTP 429: too many executions are queued. ``retry_after`` is the service's hint, in
    seconds. The client has already retried as many times as it was told to."""

    def __init__(self, message: str, status: int, body: Mapping[str, Any], retry_after: Optional[float]):
        super().__init__(message, status, body)
        self.retry_after = retry_after


class ShuttingDownError(PyexecError):
    """HTTP 503: the service is shutting down and takes no more executions."""


class ServerError(PyexecError):
    """HTTP 5xx: the service failed (the sandbox broke, the cluster did not finish in time). The
    body's ``id`` names the execution in the service's log."""


class ExecutionFailedError(PyexecError):
    """Raised by :meth:`ExecutionResult.raise_for_outcome`: the script ran and failed (HTTP 200).
    ``result`` is the whole answer: ``outcome``, ``error``, ``stderr`` with the traceback."""

    def __init__(self, result: ExecutionResult):
        super().__init__(f"{result.outcome}: {result.error or 'the run failed'}", 200)
        self.result = result
        self.outcome = result.outcome


#: Outcomes of a 400 that carries the run's output, and the exception each raises.
_REJECTED_RESULTS = {
    "invalid_main": InvalidMainError,
    "not_a_dict": ResultRejectedError,
    "unserializable": ResultRejectedError,
    "result_too_large": ResultRejectedError,
}


def error_for(status: int, body: Mapping[str, Any], retry_after: Optional[float] = None) -> PyexecError:
    """The exception for a response that is not a 200, from its status and decoded body."""
    message = str(body.get("error") or f"the service answered HTTP {status}")
    if status == 400:
        return _bad_request(message, body)
    if status in (401, 403, 421):
        return UnauthorizedError(message, status, body)
    if status == 404:
        return NotFoundError(message, status, body)
    if status == 409:
        return AlreadyFinishedError(message, status, body)
    if status == 413:
        return TooLargeError(message, status, body)
    if status == 429:
        return BusyError(message, status, body, retry_after)
    if status == 503:
        return ShuttingDownError(message, status, body)
    if status >= 500:
        return ServerError(message, status, body)
    return InvalidRequestError(message, status, body)


def _bad_request(message: str, body: Mapping[str, Any]) -> PyexecError:
    outcome = body.get("outcome")
    if isinstance(outcome, str) and outcome in _REJECTED_RESULTS:
        return _REJECTED_RESULTS[outcome](message, 400, body, outcome)
    # The contract gives these two bodies as `{"error": ...}` alone.
    if message == NO_MAIN_MESSAGE:
        return NoMainError(message, 400, body, "no_main")
    if _COMPILE_ERROR.match(message):
        return ScriptSyntaxError(message, 400, body)
    if _LIMITS_REFUSED.match(message):
        return LimitsRefusedError(message, 400, body)
    return InvalidRequestError(message, 400, body)


def answer_for(status: int, body: Mapping[str, Any], retry_after: Optional[float] = None) -> ExecutionResult:
    """The result of a run's answer when it is a 200, or the exception its status and body call
    for (the same for ``POST /execute`` and a finished execution's ``response``)."""
    if status != 200:
        raise error_for(status, body, retry_after)
    try:
        return parse_result(body)
    except MalformedResponse as err:
        raise PyexecError(f"the service's answer is not a run's result: {err}", 200, body) from err
