"""What a run returns, and the limits a run may ask for: typed values read from and written to
the service's JSON. Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Union

#: The outcome of a run whose ``main()`` returned a dict.
SUCCESS = "success"

#: The key of a file's bytes (base64) in a response's ``files``.
FILE_BYTES_KEY = "content_base64"


@dataclass(frozen=True)
class Limits:
    """Limits one run asks for; each one left as ``None`` takes the server's default.

    A request may lower any limit, or raise it up to the server's maximum; above the maximum the
    server refuses the run (:class:`~pyexec_client.LimitsRefusedError`), it never lowers it.
    """

    #: Wall-clock time from start to kill, in seconds.
    timeout_seconds: Optional[float] = None
    #: CPU time, in seconds.
    cpu_seconds: Optional[int] = None
    #: Memory of the script's whole process tree, in MiB.
    memory_mb: Optional[int] = None
    #: Processes and threads alive at once.
    max_pids: Optional[int] = None
    #: Size of the private writable ``/tmp``, in MiB.
    tmp_mb: Optional[int] = None
    #: Largest file the script may write, in MiB.
    file_size_mb: Optional[int] = None
    #: Open file descriptors.
    open_files: Optional[int] = None
    #: Bytes of stdout kept (the rest is dropped and ``stdout_truncated`` set).
    stdout_bytes: Optional[int] = None
    #: Bytes of stderr kept (the rest is dropped and ``stderr_truncated`` set).
    stderr_bytes: Optional[int] = None
    #: Largest result (``main()``'s dict as JSON), in bytes.
    result_bytes: Optional[int] = None

    def to_json(self) -> Dict[str, Union[int, float]]:
        """The ``limits`` object of a request: the limits that are set, by their API names."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


#: What :meth:`Client.run` takes as ``limits``: a :class:`Limits`, or a mapping of the same names.
LimitsLike = Union[Limits, Mapping[str, Union[int, float]]]


def limits_json(limits: Optional[LimitsLike]) -> Optional[Dict[str, Union[int, float]]]:
    """The ``limits`` object to send, or ``None`` to send none."""
    if limits is None:
        return None
    if isinstance(limits, Limits):
        return limits.to_json()
    return dict(limits)


@dataclass(frozen=True)
class File:
    """A file the run produced (a figure, for example)."""

    name: str
    size: int
    #: The media type, e.g. ``image/png``.
    media_type: str
    #: The file's content.
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ExecutionResult:
    """The answer to one run that the service carried out (HTTP 200).

    The script ran: ``outcome`` says how it ended. On ``"success"``, ``result`` is what
    ``main()`` returned; otherwise ``result`` is ``None`` and ``error`` says what happened in one
    line (``"ZeroDivisionError: division by zero"``, ``"Execution timed out after 2 s ..."``), with
    the traceback in ``stderr``. :meth:`raise_for_outcome` turns a failed run into an exception.
    """

    #: ``main()``'s dict, or ``None`` when the run failed.
    result: Optional[Dict[str, Any]]
    #: What the script printed, up to the ``stdout_bytes`` limit.
    stdout: str
    #: What the script wrote to stderr (tracebacks), up to the ``stderr_bytes`` limit.
    stderr: str
    #: The exit code; minus the signal number when a signal ended the script.
    returncode: int
    #: One word for how the run ended: ``success``, ``exception``, ``exited``, ``timeout``,
    #: ``memory_limit``, ``signaled``, ``no_result`` (the README's "Responses" lists them all).
    outcome: str
    #: One line saying what went wrong; ``None`` on success.
    error: Optional[str] = None
    #: The execution's id, as the service's log names it.
    id: Optional[str] = None
    #: Wall-clock time of the run, sandbox set-up included.
    duration_ms: Optional[int] = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    #: Things to know about how the request was read.
    warnings: List[str] = field(default_factory=list)
    #: Files the run produced (empty unless the service returns files).
    files: List[File] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether ``main()`` returned a dict."""
        return self.outcome == SUCCESS

    def raise_for_outcome(self) -> "ExecutionResult":
        """Returns this result when the run succeeded; raises
        :class:`~pyexec_client.ExecutionFailedError` carrying it otherwise."""
        if not self.ok:
            from ._errors import ExecutionFailedError

            raise ExecutionFailedError(self)
        return self


class MalformedResponse(ValueError):
    """A body that is not the shape the service documents."""


def parse_result(body: Mapping[str, Any]) -> ExecutionResult:
    """Reads a 200 response's body. Unknown fields are ignored; missing documented ones are
    :class:`MalformedResponse`."""
    try:
        result = body["result"]
        if result is not None and not isinstance(result, dict):
            raise MalformedResponse(f"result is a {type(result).__name__}, not an object")
        return ExecutionResult(
            result=result,
            stdout=_typed(body, "stdout", str),
            stderr=_typed(body, "stderr", str),
            returncode=_typed(body, "returncode", int),
            outcome=_typed(body, "outcome", str) if "outcome" in body else _guess_outcome(body),
            error=body.get("error"),
            id=body.get("id"),
            duration_ms=body.get("duration_ms"),
            stdout_truncated=bool(body.get("stdout_truncated", False)),
            stderr_truncated=bool(body.get("stderr_truncated", False)),
            warnings=list(body.get("warnings") or []),
            files=parse_files(body.get("files")),
        )
    except KeyError as missing:
        raise MalformedResponse(f"the response has no {missing}") from None


def parse_files(files: Any) -> List[File]:
    """Reads a response's ``files``: ``[{"name", "size", "media_type", "content_base64"}]``."""
    if files is None:
        return []
    if not isinstance(files, list):
        raise MalformedResponse("files is not a list")
    parsed = []
    for item in files:
        if not isinstance(item, dict):
            raise MalformedResponse("a file is not an object")
        try:
            data = base64.b64decode(_typed(item, FILE_BYTES_KEY, str), validate=True)
        except (KeyError, binascii.Error) as err:
            raise MalformedResponse(f"a file's {FILE_BYTES_KEY} is missing or not base64: {err}") from None
        parsed.append(
            File(
                name=_typed(item, "name", str),
                size=int(item.get("size", len(data))),
                media_type=str(item.get("media_type", "application/octet-stream")),
                data=data,
            )
        )
    return parsed


def _typed(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedResponse(f"{key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _guess_outcome(body: Mapping[str, Any]) -> str:
    """For a service that answers only result, stdout, stderr and returncode, no ``outcome``."""
    return SUCCESS if body.get("returncode") == 0 and body.get("result") is not None else "exception"
