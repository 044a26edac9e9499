"""A client for pyexec, the service that runs untrusted Python scripts in a sandbox and returns
what their ``main()`` returned.

    from pyexec_client import Client

    with Client("http://127.0.0.1:8080") as client:
        answer = client.run("def main():\n    return {'sum': 1 + 2}\n")
        print(answer.result)  # {'sum': 3}

Executions run a script in the background: ``submit`` returns at once, ``wait``, ``stream`` and
``cancel`` follow it. See the package's README for the errors, limits, retries, executions and
the asynchronous client.
"""

from ._client import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    AsyncClient,
    Client,
)
from ._errors import (
    NO_MAIN_MESSAGE,
    AlreadyFinishedError,
    BusyError,
    ExecutionFailedError,
    InvalidMainError,
    InvalidRequestError,
    LimitsRefusedError,
    NoAnswerError,
    NoMainError,
    NotFoundError,
    PyexecError,
    ResultRejectedError,
    ScriptRejectedError,
    ScriptSyntaxError,
    ServerError,
    ShuttingDownError,
    TooLargeError,
    TransportError,
    UnauthorizedError,
)
from ._executions import (
    CANCELLED,
    FAILED,
    FINISHED_STATES,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Execution,
    ExecutionEvent,
    ExecutionPage,
    OutputEvent,
    ResultEvent,
    StateEvent,
)
from ._result import ExecutionResult, File, Limits
from ._wire import WAIT_POLL_SECONDS, FilesLike

__version__ = "0.1.0"

__all__ = [
    "AlreadyFinishedError",
    "AsyncClient",
    "BusyError",
    "CANCELLED",
    "Client",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_WAIT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "Execution",
    "ExecutionEvent",
    "ExecutionFailedError",
    "ExecutionPage",
    "ExecutionResult",
    "FAILED",
    "FINISHED_STATES",
    "File",
    "FilesLike",
    "InvalidMainError",
    "InvalidRequestError",
    "Limits",
    "LimitsRefusedError",
    "NO_MAIN_MESSAGE",
    "NoAnswerError",
    "NoMainError",
    "NotFoundError",
    "OutputEvent",
    "PyexecError",
    "QUEUED",
    "RUNNING",
    "ResultEvent",
    "ResultRejectedError",
    "ScriptRejectedError",
    "ScriptSyntaxError",
    "ServerError",
    "ShuttingDownError",
    "StateEvent",
    "SUCCEEDED",
    "TOKEN_ENV",
    "TooLargeError",
    "TransportError",
    "URL_ENV",
    "UnauthorizedError",
    "WAIT_POLL_SECONDS",
]
