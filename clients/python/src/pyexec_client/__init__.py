"""A client for pyexec, the service that runs untrusted Python scripts in a sandbox and returns
what their ``main()`` returned.

    from pyexec_client import Client

    with Client("http://127.0.0.1:8080") as client:
        answer = client.run("def main():\n    return {'sum': 1 + 2}\n")
        print(answer.result)  # {'sum': 3}

See the package's README for the errors, limits, retries and the asynchronous client.
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
    BusyError,
    ExecutionFailedError,
    InvalidMainError,
    InvalidRequestError,
    LimitsRefusedError,
    NoMainError,
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
from ._result import ExecutionResult, File, Limits

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BusyError",
    "Client",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_WAIT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "ExecutionFailedError",
    "ExecutionResult",
    "File",
    "InvalidMainError",
    "InvalidRequestError",
    "Limits",
    "LimitsRefusedError",
    "NO_MAIN_MESSAGE",
    "NoMainError",
    "PyexecError",
    "ResultRejectedError",
    "ScriptRejectedError",
    "ScriptSyntaxError",
    "ServerError",
    "ShuttingDownError",
    "TOKEN_ENV",
    "TooLargeError",
    "TransportError",
    "URL_ENV",
    "UnauthorizedError",
]
