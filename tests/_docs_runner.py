"""Run one documentation page's examples as a reader would: ``python _docs_runner.py BLOCKS.json``.

Started by ``tests/test_docs_examples.py`` in a fresh process, in an empty temporary directory,
with ``STEPFUN_API_KEY``/``STEPFUN_BASE_URL`` pointing at an emulator. The page's ``python`` blocks
run in order in one namespace (as if pasted into one script); its shell commands that start
``stepfun-openai`` (or ``python -m stepfun_openai...``) run in between, in the same directory.
Only loopback can be reached from the examples' Python code. The outcome is written as JSON to
the file named by the second argument; a failure names the page and line of the block.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

_LOOPBACK = ("localhost", "::1")
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name not in _LOOPBACK and not name.startswith("127."):
        raise OSError(f"documentation examples may reach only loopback (the emulator), not {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _normalise(line: str) -> str:
    """Numbers (seeds, ports, times) and spacing vary from run to run; the words must not."""
    return " ".join(re.sub(r"\d+(\.\d+)?", "N", line).split())


def _is_emulator(words: list[str]) -> bool:
    return words[:2] == ["stepfun-openai", "emulator"] or words[:3] == ["python", "-m", "stepfun_openai.emulator"]


def _run_emulator_command(command: str, expected: list[str], where: str) -> None:
    """Start it (on a free port: the documented one may be taken on a shared machine), check the
    first line it prints, stop it with SIGTERM and check it exits 0."""
    words = shlex.split(command.rstrip("&").strip())
    if words[0] == "python":
        words[0] = sys.executable  # the interpreter running the tests, whatever PATH says
    if "--port" in words:
        words[words.index("--port") + 1] = "0"
    else:
        words += ["--port", "0"]
    process = subprocess.Popen(words, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline() if process.stdout else ""
        assert re.fullmatch(r"listening on http://127\.0\.0\.1:\d+/v1\n", first), f"{where}: printed {first!r}"
        if expected:
            assert _normalise(expected[0]) == _normalise(first), (
                f"{where}: printed {first!r}, page says {expected[0]!r}"
            )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, f"{where}: exit code {process.returncode}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _run_command(block: dict[str, Any], command: dict[str, Any]) -> int:
    where = f"{block['page']}:{command['line']}"
    words = shlex.split(command["text"])
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]
    if _is_emulator(words):
        _run_emulator_command(command["text"], command["expected"], where)
        return 0
    done = subprocess.run(
        ["bash", "-c", command["text"]], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    output = [_normalise(line) for line in (done.stdout + done.stderr).splitlines()]
    wanted = command["exit_code"]
    assert done.returncode == wanted, (
        f"{where}: `{command['text']}` exited {done.returncode} (the page expects {wanted})\n"
        f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )
    for line in command["expected"]:
        assert _normalise(line) in output, f"{where}: expected output {line!r}, got:\n{done.stdout}{done.stderr}"
    return done.returncode


def main(blocks_file: str, result_file: str) -> int:
    socket.getaddrinfo = _loopback_only  # type: ignore[assignment]
    blocks = json.loads(Path(blocks_file).read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    ran = 0
    for block in blocks:
        where = f"{block['page']}:{block['line']}"
        try:
            if block["kind"] == "python":
                exec(compile(block["code"], where, "exec"), namespace)
            else:
                for command in block["commands"]:
                    _run_command(block, command)
            ran += 1
        except BaseException as exc:  # any failure of an example is reported with its place
            sys.stdout.flush()
            Path(result_file).write_text(
                json.dumps({"ran": ran, "failed": where, "error": "".join(traceback.format_exception(exc))}),
                encoding="utf-8",
            )
            return 1
    Path(result_file).write_text(json.dumps({"ran": ran, "failed": None}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.pop("PYTHONSTARTUP", None)
    sys.exit(main(sys.argv[1], sys.argv[2]))
