"""The MCP server, through the official Python MCP client: `pyexec mcp --url ...` over stdio
against a real service, and /mcp on a real service over streamable HTTP."""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import httpx
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import TOKEN
from server import Server, binary, sandbox_env
from test_contract import PANDAS

pytestmark = pytest.mark.anyio

NO_MAIN = "Script must contain a 'main()' function."


@asynccontextmanager
async def over_stdio(server: Server, extra: Optional[List[str]] = None) -> AsyncIterator[ClientSession]:
    """A session with `pyexec mcp` forwarding to `server`."""
    args = ["mcp", "--url", server.url, *(extra or [])]
    parameters = StdioServerParameters(command=str(binary()), args=args, env=sandbox_env())
    async with stdio_client(parameters) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def over_http(server: Server, token: Optional[str] = None) -> AsyncIterator[ClientSession]:
    """A session with `server`'s own /mcp."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def the_tool_is_run_python_with_its_schemas(session: ClientSession) -> None:
    tools = (await session.list_tools()).tools
    assert [tool.name for tool in tools] == ["run_python"]
    tool = tools[0]
    assert tool.input_schema["required"] == ["script"]
    assert "timeout_seconds" in tool.input_schema["properties"]["limits"]["properties"]
    assert tool.output_schema is not None
    assert tool.output_schema["required"] == ["result", "stdout", "stderr", "returncode", "outcome"]


async def the_pandas_example_is_structured_content(session: ClientSession) -> None:
    answer = await session.call_tool("run_python", {"script": PANDAS})
    assert answer.is_error is False
    content = answer.structured_content
    assert content is not None
    assert content["result"] == {"sum_A": 6, "mean_B": 5.0}
    assert (content["stdout"], content["stderr"], content["returncode"], content["outcome"]) == ("", "", 0, "success")
    # The text rendering is the same content, as JSON.
    texts = [block.text for block in answer.content if block.type == "text"]
    assert [json.loads(text) for text in texts] == [content]


async def no_main_is_a_tool_error_with_the_message(session: ClientSession) -> None:
    answer = await session.call_tool("run_python", {"script": "print('no main here')\n"})
    assert answer.is_error is True
    assert [block.text for block in answer.content if block.type == "text"] == [NO_MAIN]


async def a_failed_run_is_an_error_with_its_fields(session: ClientSession) -> None:
    answer = await session.call_tool(
        "run_python", {"script": "import time\ndef main():\n    time.sleep(5)\n", "limits": {"timeout_seconds": 0.5}}
    )
    assert answer.is_error is True
    content: Dict[str, Any] = answer.structured_content or {}
    assert (content.get("outcome"), content.get("returncode"), content.get("result")) == ("timeout", -9, None)


async def a_refused_limit_is_a_tool_error_naming_it(session: ClientSession) -> None:
    answer = await session.call_tool("run_python", {"script": PANDAS, "limits": {"memory_mb": 10**6}})
    assert answer.is_error is True
    assert "memory_mb" in answer.content[0].text  # type: ignore[union-attr]


async def an_open_figure_comes_back_as_image_content(session: ClientSession) -> None:
    script = (
        "import pandas as pd\n"
        "def main():\n"
        "    pd.DataFrame({'x': [1, 2, 3], 'y': [2, 4, 8]}).plot(x='x', y='y')\n"
        "    return {'plotted': True}\n"
    )
    answer = await session.call_tool("run_python", {"script": script})
    assert answer.is_error is False
    assert (answer.structured_content or {}).get("result") == {"plotted": True}
    images = [block for block in answer.content if block.type == "image"]
    assert [image.mime_type for image in images] == ["image/png"]  # type: ignore[union-attr]
    png = base64.b64decode(images[0].data)  # type: ignore[union-attr]
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"


CASES = [
    the_tool_is_run_python_with_its_schemas,
    an_open_figure_comes_back_as_image_content,
    the_pandas_example_is_structured_content,
    no_main_is_a_tool_error_with_the_message,
    a_failed_run_is_an_error_with_its_fields,
    a_refused_limit_is_a_tool_error_naming_it,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_over_stdio(server: Server, case: Any) -> None:
    async with over_stdio(server) as session:
        await case(session)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_over_http(server: Server, case: Any) -> None:
    async with over_http(server) as session:
        await case(session)


async def test_over_stdio_without_the_token_the_call_is_refused(token_server: Server) -> None:
    async with over_stdio(token_server) as session:
        answer = await session.call_tool("run_python", {"script": PANDAS})
    assert answer.is_error is True
    assert answer.content[0].text.startswith("The pyexec service answered HTTP 401")  # type: ignore[union-attr]


async def test_over_stdio_with_the_token_file(token_server: Server, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    async with over_stdio(token_server, ["--token-file", str(tmp_path / "token")]) as session:
        await the_pandas_example_is_structured_content(session)


async def test_over_stdio_an_unreachable_service_is_a_tool_error(server: Server) -> None:
    gone = Server.__new__(Server)
    gone.url = "http://127.0.0.1:9"
    async with over_stdio(gone) as session:
        answer = await session.call_tool("run_python", {"script": PANDAS})
    assert answer.is_error is True
    assert "could not reach the pyexec service" in answer.content[0].text  # type: ignore[union-attr]


def test_over_http_without_the_token_mcp_is_refused(token_server: Server) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = httpx.post(f"{token_server.url}/mcp", json=initialize, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")


async def test_over_http_the_official_client_fails_without_the_token(token_server: Server) -> None:
    refused = 'pyexec_rejected_requests_total{reason="token_missing"}'
    before = token_server.metric(refused)
    with pytest.raises(BaseExceptionGroup) as raised:
        async with over_http(token_server):
            pass
    assert raised.group_contains(MCPError, match="error response", depth=None)
    assert token_server.metric(refused) > before


async def test_over_http_with_the_token(token_server: Server) -> None:
    async with over_http(token_server, token=TOKEN) as session:
        await the_pandas_example_is_structured_content(session)


def test_over_http_a_foreign_origin_is_refused(server: Server) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    answer = httpx.post(f"{server.url}/mcp", json=initialize, headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403
