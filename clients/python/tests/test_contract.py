"""Every row of the HTTP contract (the README's "Responses"), through the client, against a real
`pyexec serve` with real nsjail."""

from __future__ import annotations

from typing import Iterator

import pytest

from pyexec_client import (
    Client,
    ExecutionFailedError,
    InvalidMainError,
    Limits,
    LimitsRefusedError,
    NoMainError,
    ResultRejectedError,
    ScriptRejectedError,
    ScriptSyntaxError,
    TooLargeError,
)
from server import Server

PANDAS = """\
import pandas as pd
def main():
    df = pd.DataFrame({"A": [1, 2, 3], "B": [4, 5, 6]})
    return {"sum_A": int(df["A"].sum()), "mean_B": float(df["B"].mean())}
"""


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def test_main_returning_a_dict_is_the_result(client: Client) -> None:
    answer = client.run(PANDAS)
    assert answer.result == {"sum_A": 6, "mean_B": 5.0}
    assert (answer.ok, answer.outcome, answer.returncode, answer.error) == (True, "success", 0, None)
    assert (answer.stdout, answer.stderr, answer.files, answer.warnings) == ("", "", [], [])
    assert answer.id and answer.duration_ms is not None
    assert answer.raise_for_outcome() is answer


def test_prints_inside_main_are_stdout_and_the_result_is_still_main_s(client: Client) -> None:
    answer = client.run("import sys\ndef main():\n    print('hello')\n    print('oops', file=sys.stderr)\n    return {'n': 1}\n")
    assert (answer.result, answer.stdout, answer.stderr) == ({"n": 1}, "hello\n", "oops\n")


@pytest.mark.parametrize("script", ["", "x = 1\n", "def helper():\n    return {}\n"])
def test_an_empty_script_or_one_without_main_is_no_main(client: Client, script: str) -> None:
    with pytest.raises(NoMainError) as raised:
        client.run(script)
    assert raised.value.status == 400
    assert raised.value.outcome == "no_main"
    assert raised.value.message == "Script must contain a 'main()' function."
    assert dict(raised.value.body) == {"error": "Script must contain a 'main()' function."}


def test_a_syntax_error_names_its_line_and_column(client: Client) -> None:
    with pytest.raises(ScriptSyntaxError) as raised:
        client.run("def main():\n    return {'a': }\n")
    assert raised.value.message.startswith("SyntaxError: ")
    assert (raised.value.line, raised.value.column) == (2, 16)
    assert isinstance(raised.value, ScriptRejectedError)


def test_an_indentation_error_is_a_syntax_error_too(client: Client) -> None:
    with pytest.raises(ScriptSyntaxError, match="IndentationError"):
        client.run("def main():\nreturn {}\n")


@pytest.mark.parametrize("value, kind", [("42", "int"), ("[1, 2]", "list")])
def test_a_non_dict_is_refused_with_the_output(client: Client, value: str, kind: str) -> None:
    with pytest.raises(ResultRejectedError) as raised:
        client.run(f"def main():\n    print('before')\n    return {value}\n")
    assert raised.value.outcome == "not_a_dict"
    assert raised.value.message == f"main() must return a dict, but it returned {kind}"
    assert raised.value.stdout == "before\n"


def test_a_result_json_cannot_hold_names_its_key_path(client: Client) -> None:
    with pytest.raises(ResultRejectedError) as raised:
        client.run("def main():\n    return {'a': [1, {'b': object()}]}\n")
    assert raised.value.outcome == "unserializable"
    assert raised.value.message.startswith("result['a'][1]['b']: value of type object")


def test_a_result_over_result_bytes_is_refused(client: Client) -> None:
    with pytest.raises(ResultRejectedError) as raised:
        client.run("def main():\n    return {'a': 'x' * 10000}\n", limits=Limits(result_bytes=1000))
    assert raised.value.outcome == "result_too_large"


@pytest.mark.parametrize("script", ["main = 3\n", "def main(x):\n    return {}\n", "async def main():\n    return {}\n"])
def test_a_main_that_cannot_be_called_is_invalid(client: Client, script: str) -> None:
    with pytest.raises(InvalidMainError) as raised:
        client.run(script)
    assert raised.value.outcome == "invalid_main"


def test_main_raising_is_a_200_with_the_traceback(client: Client) -> None:
    answer = client.run("def main():\n    return {'x': 1 / 0}\n")
    assert (answer.ok, answer.outcome, answer.result, answer.returncode) == (False, "exception", None, 1)
    assert answer.error == "ZeroDivisionError: division by zero"
    assert "Traceback" in answer.stderr
    with pytest.raises(ExecutionFailedError) as raised:
        answer.raise_for_outcome()
    assert raised.value.result is answer
    assert raised.value.outcome == "exception"


def test_sys_exit_before_main_returns_is_its_code(client: Client) -> None:
    answer = client.run("import sys\ndef main():\n    sys.exit(3)\n")
    assert (answer.outcome, answer.returncode) == ("exited", 3)
    assert answer.error == "The script exited with code 3 before main() returned"


def test_the_wall_clock_limit_keeps_the_prints_so_far(client: Client) -> None:
    script = "import time\ndef main():\n    print('started', flush=True)\n    time.sleep(30)\n"
    answer = client.run(script, limits={"timeout_seconds": 1})
    assert (answer.outcome, answer.returncode, answer.stdout) == ("timeout", -9, "started\n")
    assert answer.error == "Execution timed out after 1 s (wall-clock limit)"


def test_the_memory_limit(client: Client) -> None:
    script = "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))\n"
    answer = client.run(script, limits=Limits(memory_mb=128))
    assert (answer.outcome, answer.returncode, answer.error) == ("memory_limit", -9, "Memory limit of 128 MiB exceeded")


def test_a_segfault_is_its_signal(client: Client) -> None:
    answer = client.run("import ctypes\ndef main():\n    ctypes.string_at(0)\n    return {}\n")
    assert (answer.outcome, answer.returncode) == ("signaled", -11)


def test_output_past_its_limit_is_cut_and_flagged(client: Client) -> None:
    answer = client.run("def main():\n    print('x' * 5000)\n    return {}\n", limits=Limits(stdout_bytes=100))
    assert answer.stdout_truncated and len(answer.stdout) <= 100
    assert not answer.stderr_truncated


def test_a_limit_above_the_maximum_is_refused_naming_it(client: Client) -> None:
    with pytest.raises(LimitsRefusedError, match="timeout_seconds") as raised:
        client.run("def main():\n    return {}\n", limits={"timeout_seconds": 100000})
    assert raised.value.status == 400


def test_an_unknown_limit_is_refused(client: Client) -> None:
    with pytest.raises(LimitsRefusedError, match="limits"):
        client.run("def main():\n    return {}\n", limits={"gpus": 1})


def test_a_script_over_the_size_limit_is_413(client: Client) -> None:
    with pytest.raises(TooLargeError) as raised:
        client.run("def main():\n    return {}\n" + "#" * (1 << 20))
    assert raised.value.status == 413


def test_the_cpu_time_limit(client: Client) -> None:
    answer = client.run("def main():\n    while True:\n        pass\n", limits=Limits(cpu_seconds=1, timeout_seconds=20))
    assert (answer.outcome, answer.error) == ("timeout", "CPU time limit of 1 s exceeded")
