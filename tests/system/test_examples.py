"""Every script in examples/ runs as it is, on loopback, and ends by itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 20


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=EXAMPLES.parent)


@pytest.fixture(scope="module")
def csms_url() -> Iterator[str]:
    """examples/csms.py on a free port, for the charge-point examples."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "csms.py"), "--port", "0", "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "listening on ws://127.0.0.1:PORT/ocpp"
        match = re.search(r"listening on (ws://\S+)", line)
        assert match, line + (process.stderr.read() if process.stderr else "")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)


def test_every_example_is_tested() -> None:
    tested = {"csms.py", "charge_point.py", "trio_charge_point.py", "basic_auth.py",
              "server_call.py", "handlers.py", "test_my_csms.py"}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_charge_point(csms_url: str) -> None:
    done = run("examples/charge_point.py", "--url", csms_url, "--once")
    assert done.returncode == 0, done.stderr
    assert "BootNotification: Accepted" in done.stdout and "Heartbeat:" in done.stdout


def test_trio_charge_point(csms_url: str) -> None:
    done = run("examples/trio_charge_point.py", "--url", csms_url, "--meter-interval", "0.05")
    assert done.returncode == 0, done.stderr
    assert "Authorize: Accepted" in done.stdout
    assert re.search(r"charging, transaction \d+", done.stdout)
    assert "stopped after" in done.stdout


def test_charge_point_without_csms_says_so() -> None:
    done = run("examples/charge_point.py", "--url", "ws://127.0.0.1:1/ocpp", "--once")
    assert done.returncode == 1 and "is a CSMS running?" in done.stderr


def test_csms_stops_after_its_duration() -> None:
    done = run("examples/csms.py", "--port", "0", "--duration", "0.2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("listening on ws://127.0.0.1:")


def test_basic_auth() -> None:
    done = run("examples/basic_auth.py")
    assert done.returncode == 0, done.stderr
    assert "CP001 with the right password: {'currentTime'" in done.stdout
    assert "{'authenticated_as': 'CP001'}" in done.stdout
    assert "CP001 with a wrong password: refused, HTTP 401" in done.stdout


def test_server_call() -> None:
    done = run("examples/server_call.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "CSMS: HeartbeatInterval is 300",
        "charger: reset requested: OnIdle",
        "CSMS: Reset answered Scheduled",
    ]


def test_handlers_module_with_serve() -> None:
    serve = subprocess.Popen(
        [sys.executable, "-m", "ocpp_rpc", "serve", "--port", "0", "--json", "--quiet",
         "--handlers", "examples/handlers.py"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=EXAMPLES.parent,
    )
    try:
        assert serve.stdout is not None and serve.stdin is not None
        events = [json.loads(serve.stdout.readline()) for _ in range(2)]
        assert events[0]["event"] == "handlers"
        assert events[0]["actions"] == ["BootNotification", "Authorize", "DataTransfer"]
        url = events[1]["url"]
        done = subprocess.run(
            [sys.executable, "-m", "ocpp_rpc", "call", f"{url}/ocpp/CP1", "--protocols",
             "ocpp1.6", "--json", "--file", "-"],
            input='BootNotification {"chargePointVendor": "A", "chargePointModel": "B"}\n'
                  'Authorize {"idTag": "TAG1"}\nAuthorize {"idTag": "NOPE"}\n'
                  'DataTransfer {"vendorId": "ACME"}\nDataTransfer {"vendorId": "X"}\n',
            capture_output=True, text=True, timeout=TIMEOUT)
        answers = [e.get("result") or e.get("code")
                   for e in map(json.loads, done.stdout.splitlines())
                   if e["event"] in ("result", "error")]
        assert answers[0]["interval"] == 60
        assert answers[1:] == [{"idTagInfo": {"status": "Accepted"}},
                               {"idTagInfo": {"status": "Invalid"}},
                               {"status": "Accepted", "data": "pong"}, "NotSupported"]
        serve.stdin.close()
        assert serve.wait(timeout=TIMEOUT) == 0
        assert "handlers.py: welcome CP1" in serve.stderr.read()  # type: ignore[union-attr]
    finally:
        serve.kill()


def test_testing_example_passes_on_both_backends() -> None:
    done = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/test_my_csms.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
