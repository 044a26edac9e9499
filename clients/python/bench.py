"""Latency of one call through each way of reaching pyexec, beside raw HTTP, in one process.

Starts a `pyexec serve` with the defaults (the pool of ready sandboxes on), then runs the same
script N times each way, in turns (raw, client, MCP stdio, MCP HTTP, raw, ...) so that drift in
the machine's speed falls on all alike; before each call it waits until a ready sandbox of each
kind is waiting, so every call is a warm one and the columns differ only by the way in:

- raw HTTP: httpx POSTs /execute and decodes the JSON (the baseline);
- pyexec_client.Client.run: the same request through the client, answer parsed into its dataclass;
- MCP stdio: a tools/call in a session with `pyexec mcp --url ...`, which forwards it over HTTP;
- MCP HTTP: a tools/call in a session with the service's own /mcp (streamable HTTP).

Run it with `make client-bench` (release build; RUNS=N to change the count), or
`PYEXEC_BIN=target/release/pyexec .venv-client/bin/python clients/python/bench.py [N]`.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable, Dict, List

import anyio
import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).parent / "tests"))
from server import Server, binary, sandbox_env  # noqa: E402

from pyexec_client import Client  # noqa: E402

SCRIPTS = {
    "hello": "def main():\n    return {'message': 'Hello World'}\n",
    "pandas": """\
import pandas as pd
def main():
    df = pd.DataFrame({"A": [1, 2, 3], "B": [4, 5, 6]})
    return {"sum_A": int(df["A"].sum()), "mean_B": float(df["B"].mean())}
""",
}
WAYS = ["raw HTTP (httpx)", "pyexec_client.Client", "MCP stdio (pyexec mcp)", "MCP HTTP (/mcp)"]


def percentile(samples: List[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(server: Server, runs: int) -> Dict[str, Dict[str, List[float]]]:
    stdio = StdioServerParameters(command=str(binary()), args=["mcp", "--url", server.url], env=sandbox_env())
    raw = httpx.Client(base_url=server.url, timeout=120)
    client = Client(server.url)
    async with stdio_client(stdio) as (stdio_read, stdio_write), ClientSession(stdio_read, stdio_write) as over_stdio:
        async with streamable_http_client(f"{server.url}/mcp") as (http_read, http_write):
            async with ClientSession(http_read, http_write) as over_http:
                await over_stdio.initialize()
                await over_http.initialize()

                def call_raw(script: str) -> None:
                    answer = raw.post("/execute", json={"script": script})
                    assert answer.status_code == 200 and answer.json()["outcome"] == "success", answer.text

                def call_client(script: str) -> None:
                    assert client.run(script).ok

                async def call_mcp(session: ClientSession, script: str) -> None:
                    answer = await session.call_tool("run_python", {"script": script})
                    assert answer.is_error is False, answer

                calls: Dict[str, Callable[[str], Awaitable[None]]] = {
                    WAYS[0]: lambda script: _sync(call_raw, script),
                    WAYS[1]: lambda script: _sync(call_client, script),
                    WAYS[2]: lambda script: call_mcp(over_stdio, script),
                    WAYS[3]: lambda script: call_mcp(over_http, script),
                }
                samples: Dict[str, Dict[str, List[float]]] = {name: {way: [] for way in WAYS} for name in SCRIPTS}
                for name, script in SCRIPTS.items():
                    for way, call in calls.items():  # one untimed call each: connections, first imports
                        await call(script)
                    for _ in range(runs):
                        for way, call in calls.items():
                            for kind in ("plain", "preloaded"):
                                server.wait_for(f'pyexec_pool_ready{{kind="{kind}"}}', 1)
                            started = time.perf_counter()
                            await call(script)
                            samples[name][way].append((time.perf_counter() - started) * 1000)
    raw.close()
    client.close()
    return samples


async def _sync(call: Callable[[str], None], script: str) -> None:
    call(script)


def table(samples: Dict[str, Dict[str, List[float]]], runs: int) -> str:
    lines = [
        f"one call each way, {runs} runs per script, in turns; a ready sandbox waits before each call",
        f"{'':34}|  p50 ms |  p99 ms | p50 - raw",
    ]
    for name, ways in samples.items():
        raw_p50 = statistics.median(ways[WAYS[0]])
        for way in WAYS:
            p50 = statistics.median(ways[way])
            p99 = percentile(ways[way], 0.99)
            lines.append(f"{name + ' ' + way:34}| {p50:7.1f} | {p99:7.1f} | {p50 - raw_p50:+7.1f}")
    return "\n".join(lines)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    server = Server([])
    try:
        samples = anyio.run(measure, server, runs)
    finally:
        server.stop()
    print(table(samples, runs))


if __name__ == "__main__":
    main()
