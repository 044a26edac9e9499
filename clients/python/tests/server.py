"""A real ``pyexec serve`` for the tests: the built binary with the repository's nsjail and sandbox
Python (the same environment as tests/host/common/mod.rs gives it), on a free loopback port,
stopped with SIGTERM."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import httpx

REPO = Path(__file__).resolve().parents[3]
TOOLS = REPO / ".tools"
#: How long a server may take to answer /healthz and fill its pool.
START_TIMEOUT = 60.0
_servers = itertools.count()


def binary() -> Path:
    """``$PYEXEC_BIN``, else the debug build, else the release build."""
    if os.environ.get("PYEXEC_BIN"):
        return Path(os.environ["PYEXEC_BIN"])
    for profile in ("debug", "release"):
        path = REPO / "target" / profile / "pyexec"
        if path.exists():
            return path
    raise RuntimeError("no pyexec binary: run `cargo build` (or set PYEXEC_BIN)")


def sandbox_env() -> Dict[str, str]:
    """The environment every pyexec command of the tests runs with."""
    if not (TOOLS / "nsjail/bin/nsjail").exists() or not (TOOLS / "python/bin/python3").exists():
        raise RuntimeError("run `make setup` first: .tools/ is missing nsjail or the sandbox Python")
    env = dict(os.environ)
    env.update(
        PYEXEC_NSJAIL=str(TOOLS / "nsjail/bin/nsjail"),
        PYEXEC_NSJAIL_CONFIG=str(REPO / "nsjail.cfg"),
        PYEXEC_PYTHON_ENV=str(TOOLS / "python"),
        PYEXEC_LOG="warn",
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One ``pyexec serve`` process."""

    def __init__(self, flags: List[str], token: Optional[str] = None, token_dir: Optional[Path] = None):
        self.token = token
        self.url = f"http://127.0.0.1:{free_port()}"
        args = [str(binary()), "serve", "--listen", self.url.removeprefix("http://")]
        # Under the tests' cgroup prefix, which `make check-leftovers` inspects.
        args += ["--cgroup-parent", f"pyexec-test-client-{os.getpid()}-{next(_servers)}"]
        # Its own executions database, which no other server reads, removed when it stops.
        self.state_dir = Path(tempfile.mkdtemp(prefix="pyexec-client-state-"))
        args += ["--state-dir", str(self.state_dir)]
        args += ["--shutdown-grace-seconds", "5", *flags]
        if token is not None:
            assert token_dir is not None
            token_file = token_dir / "token"
            token_file.write_text(token + "\n")
            args += ["--api-token-file", str(token_file)]
        self.process = subprocess.Popen(args, cwd=REPO, env=sandbox_env(), stdout=subprocess.DEVNULL)
        try:
            self._wait_until_ready("--pool-max" not in flags or flags[flags.index("--pool-max") + 1] != "0")
        except BaseException:
            self.stop()
            raise

    def headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def metric(self, name: str) -> float:
        """A metric's value (``name`` may carry labels: ``x{kind="plain"}``), summed over the
        labels it does not name; 0 when absent."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers()).text
        labels = "" if "{" in name else r"(\{[^}]*\})?"
        pattern = re.compile(rf"^{re.escape(name)}{labels} (?P<value>\S+)$")
        return sum(float(m.group("value")) for line in text.splitlines() if (m := pattern.match(line)))

    def wait_for(self, name: str, at_least: float, timeout: float = START_TIMEOUT) -> None:
        """Waits until the metric ``name`` reaches ``at_least``."""
        self.wait_until(name, lambda value: value >= at_least, f"reach {at_least}", timeout)

    def wait_until(self, name: str, holds: Callable[[float], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        """Waits until the metric ``name``'s value ``holds``."""
        deadline = time.monotonic() + timeout
        while not holds(self.metric(name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not {what} in {timeout} s")
            time.sleep(0.02)

    def _wait_until_ready(self, pool: bool) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pyexec serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("pyexec serve did not become healthy")
            time.sleep(0.02)
        # With the pool on, the first scripts of a test run in ready sandboxes.
        if pool:
            for kind in ("plain", "preloaded"):
                self.wait_for(f'pyexec_pool_ready{{kind="{kind}"}}', 1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.state_dir, ignore_errors=True)
