"""Executions (``/executions``): a script run in the background and kept as a resource with an
id. The typed values read from the service's JSON, and the reader of its event stream
(Server-Sent Events). Pure functions, no I/O."""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ._errors import NoAnswerError, answer_for
from ._result import ExecutionResult, MalformedResponse

#: Waiting for a sandbox.
QUEUED = "queued"
#: Its sandbox started.
RUNNING = "running"
#: ``main()`` returned a result that could be sent.
SUCCEEDED = "succeeded"
#: Anything else: an exception, a limit, no ``main()``, or cut off by a stop of the service.
FAILED = "failed"
#: Stopped by :meth:`Client.cancel`.
CANCELLED = "cancelled"
#: The states an execution ends in.
FINISHED_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})


@dataclass(frozen=True)
class Execution:
    """One execution as the service shows it.

    ``state`` is ``queued``, ``running``, then one of ``succeeded``, ``failed`` or ``cancelled``.
    Once it finished with an answer, ``http_status`` and ``response`` are exactly the status and
    body ``POST /execute`` gives for the same script; :meth:`result` reads them the way
    :meth:`Client.run` does.
    """

    id: str
    state: str
    created_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    #: Why it ended without an answer (cancelled, or cut off by a stop of the service).
    reason: Optional[str] = None
    #: The status ``POST /execute`` would have answered; ``None`` until it finished with one.
    http_status: Optional[int] = None
    #: The body ``POST /execute`` would have answered, decoded; ``None`` until then.
    response: Optional[Dict[str, Any]] = field(default=None, repr=False)
    #: The path of the execution (``/executions/{id}``), in the answer to a submission.
    location: Optional[str] = None

    @property
    def finished(self) -> bool:
        """Whether it ended: succeeded, failed or cancelled."""
        return self.state in FINISHED_STATES

    def result(self) -> ExecutionResult:
        """The answer, as :meth:`Client.run` returns it: an :class:`ExecutionResult` when the
        script ran (check ``.ok``), the same :class:`PyexecError` subclass ``run`` raises when the
        service refused it (a script without ``main()`` is :class:`NoMainError`).

        Raises :class:`NoAnswerError` when there is no answer: not finished yet, cancelled, or cut
        off by a stop of the service.
        """
        if self.http_status is None or self.response is None:
            raise NoAnswerError(self)
        return answer_for(self.http_status, self.response)


@dataclass(frozen=True)
class ExecutionPage:
    """One page of a listing, newest first. The executions carry no answers (``http_status`` and
    ``response`` are ``None``); ``next`` is the cursor of the next page, ``None`` on the last."""

    executions: List[Execution]
    next: Optional[str]


@dataclass(frozen=True)
class StateEvent:
    """The execution is ``queued`` or ``running``: sent on connecting and when its sandbox starts."""

    state: str


@dataclass(frozen=True)
class OutputEvent:
    """A chunk the script wrote, as the sandbox read it. ``stream`` is ``stdout`` or ``stderr``."""

    stream: str
    text: str


@dataclass(frozen=True)
class ResultEvent:
    """The finished execution; the last event of a stream."""

    execution: Execution


#: What :meth:`Client.stream` yields.
ExecutionEvent = Union[StateEvent, OutputEvent, ResultEvent]


def parse_execution(body: Mapping[str, Any]) -> Execution:
    """Reads an execution (``GET /executions/{id}``, a submission's 202, an event's ``result``).
    Unknown fields are ignored; a missing ``id``, ``state`` or ``created_at`` is
    :class:`MalformedResponse`."""
    response = body.get("response")
    if response is not None and not isinstance(response, dict):
        raise MalformedResponse(f"response is a {type(response).__name__}, not an object")
    http_status = body.get("http_status")
    if http_status is not None and (not isinstance(http_status, int) or isinstance(http_status, bool)):
        raise MalformedResponse(f"http_status is a {type(http_status).__name__}, not an int")
    return Execution(
        id=_text(body, "id"),
        state=_text(body, "state"),
        created_at=parse_timestamp(_text(body, "created_at")),
        started_at=_optional_timestamp(body, "started_at"),
        finished_at=_optional_timestamp(body, "finished_at"),
        reason=_optional_text(body, "reason"),
        http_status=http_status,
        response=response,
        location=_optional_text(body, "location"),
    )


def parse_page(body: Mapping[str, Any]) -> ExecutionPage:
    """Reads a listing: ``{"executions": [...], "next": cursor or null}``."""
    executions = body.get("executions")
    if not isinstance(executions, list) or not all(isinstance(item, dict) for item in executions):
        raise MalformedResponse("executions is not a list of objects")
    return ExecutionPage([parse_execution(item) for item in executions], _optional_text(body, "next"))


# RFC 3339 as the service writes it (2026-01-31T12:00:00.250Z), any number of fraction digits.
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp(text: str) -> datetime:
    """An aware :class:`datetime` from an RFC 3339 time (``datetime.fromisoformat`` on Python 3.9
    takes neither ``Z`` nor fractions other than 3 or 6 digits)."""
    match = _TIMESTAMP.match(text)
    if not match:
        raise MalformedResponse(f"{text!r} is not an RFC 3339 time")
    seconds, fraction, offset = match.groups()
    try:
        at = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise MalformedResponse(f"{text!r} is not an RFC 3339 time") from None
    microseconds = int((fraction or "0")[:6].ljust(6, "0"))
    if offset == "Z":
        zone = timezone.utc
    else:
        sign = -1 if offset[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    return at.replace(microsecond=microseconds, tzinfo=zone)


def parse_event(name: str, data: str) -> Optional[ExecutionEvent]:
    """The typed event of one Server-Sent Event; ``None`` for an event this client does not know,
    so that a newer service's events are skipped."""
    if name not in ("state", "stdout", "stderr", "result"):
        return None
    try:
        body = json.loads(data)
    except json.JSONDecodeError as err:
        raise MalformedResponse(f"the {name} event's data is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise MalformedResponse(f"the {name} event's data is not an object")
    if name == "state":
        return StateEvent(_text(body, "state"))
    if name == "result":
        return ResultEvent(parse_execution(body))
    return OutputEvent(name, _text(body, "text"))


class ServerSentEvents:
    """Reads the bytes of a ``text/event-stream`` into ``(event, data)`` pairs, as the HTML
    standard's event-stream interpretation does: UTF-8, lines ended by CRLF, LF or CR;
    ``event:`` names the event (``message`` when absent), each ``data:`` line adds a line to its
    data, a blank line ends it, lines starting with ``:`` are comments (the service's
    keep-alives), and one space after the colon is dropped. An event without data is not
    dispatched, nor is one the stream ends in the middle of."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._name = ""
        self._data: List[str] = []

    def feed(self, chunk: bytes) -> List[Tuple[str, str]]:
        """Takes the next bytes of the stream; returns the events they complete."""
        text = self._pending + self._decoder.decode(chunk)
        # A CR at the end may be the first half of a CRLF: keep it for the next chunk.
        held_cr = text.endswith("\r")
        lines = _LINE_END.split(text[:-1] if held_cr else text)
        self._pending = lines.pop() + ("\r" if held_cr else "")
        return [event for event in map(self._line, lines) if event is not None]

    def end(self) -> List[Tuple[str, str]]:
        """Takes the end of the stream: a CR held back ends its line after all."""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        event = self._line(text[:-1]) if text.endswith("\r") else None
        return [event] if event is not None else []

    def _line(self, line: str) -> Optional[Tuple[str, str]]:
        if not line:
            name, data = self._name or "message", self._data
            self._name, self._data = "", []
            return (name, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "event":
            self._name = value
        elif key == "data":
            self._data.append(value)
        # id and retry matter only to a client that reconnects; this one does not.
        return None


_LINE_END = re.compile(r"\r\n|\r|\n")


def feed_events(reader: ServerSentEvents, chunk: Optional[bytes]) -> List[ExecutionEvent]:
    """The typed events the next bytes of an event stream complete; ``None`` is its end."""
    raw = reader.end() if chunk is None else reader.feed(chunk)
    typed = (parse_event(name, data) for name, data in raw)
    return [event for event in typed if event is not None]


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise MalformedResponse(f"{key} is missing or not a string")
    return value


def _optional_text(body: Mapping[str, Any], key: str) -> Optional[str]:
    return None if body.get(key) is None else _text(body, key)


def _optional_timestamp(body: Mapping[str, Any], key: str) -> Optional[datetime]:
    text = _optional_text(body, key)
    return None if text is None else parse_timestamp(text)
