"""Shared by the Python contenders of bench.py (standard library only: it also runs
in the interop venv, which has no anyio)."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: The frames every contender sends: {method: {"params": ..., "result": ...}}.
FRAMES: dict[str, dict[str, Any]] = json.loads((HERE / "frames.json").read_text())
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc/<pid>/statm."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def collect() -> None:
    gc.collect()


def latency_stats(times: list[float]) -> dict[str, float]:
    """p50/p99 in seconds."""
    ordered = sorted(times)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


class Child:
    """A child process spoken to in lines: JSON lines from its stdout, words to
    its stdin; closing its stdin tells it to exit. Blocking: call from a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)

    def expect(self, event: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"child exited before {event!r}")
            message = json.loads(line)
            if message.get("event") == event:
                return message

    def say(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def tell_parent(event: str, **data: Any) -> None:
    """Child side of `Child`: one JSON line on stdout."""
    print(json.dumps({"event": event, **data}), flush=True)


def read_parent() -> str:
    """Child side of `Child`: the next word from the parent ('' at EOF). Blocking."""
    return sys.stdin.readline().strip()


def finish(result: dict[str, Any] | None) -> None:
    """Print the result line and leave without tearing thousands of objects down."""
    if result is not None:
        print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)
