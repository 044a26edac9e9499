"""The client's pure readers, on answers a service of this version does not give yet (files) or
gives rarely (odd Retry-After values, malformed bodies)."""

from __future__ import annotations

import base64
from typing import Any, Dict

import httpx
import pytest

from pyexec_client import Client, File, Limits, PyexecError
from pyexec_client._client import request_body, retry_after

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
