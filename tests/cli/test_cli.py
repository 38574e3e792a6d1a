"""The `ocpp-rpc` command line, run for real: subprocesses on loopback.

One development CSMS (`serve --port 0`) per module serves most tests; the
ones that need their own options or stdin start their own. Every subprocess
has a timeout.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anyio
import pytest

from ocpp_rpc import Call, RPCClient, create_rpc_error
from ocpp_rpc._wire.validation import builtin_validator
from ocpp_rpc.cli import UsageError, common
from ocpp_rpc.cli.answers import CSMSDefaults, answer_as_charge_point
from ocpp_rpc.cli.call import parse_call_line, split_url
from ocpp_rpc.cli.main import build_parser
from ocpp_rpc.cli.output import Output
from ocpp_rpc.cli.simulation import run_session

TIMEOUT = 20
DOCS = Path(__file__).resolve().parents[2] / "docs"
#: Calls of one simulated 1.6 session with the defaults: boot, status,
#: heartbeat, authorize, status, start, 2 meter values, stop, status.
CALLS_PER_SESSION = 10


def cli(*args: str, input: str | None = None, timeout: float = TIMEOUT,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocpp_rpc", *args], input=input, capture_output=True,
        text=True, timeout=timeout, env=env,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Serve:
    """`ocpp-rpc serve --port 0 --json ...` in the background, its stdout
    read line by line on a thread so that waits can time out."""

    def __init__(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ocpp_rpc", "serve", "--port", "0", "--json", *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.wait_for(lambda e: e["event"] == "listening")
        self.port = int(listening["port"])
        self.url = f"{listening['url']}/ocpp"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"timed out; seen {self.seen}") from None
            if event is None:
                assert self.process.stderr is not None
                raise AssertionError(f"serve ended: {self.seen} {self.process.stderr.read()}")
            self.seen.append(event)
            if predicate(event):
                return event

    def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> int:
        """Close stdin (as the tests' way to stop it) and wait for the exit."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            return self.process.wait(timeout=TIMEOUT)
        finally:
            if self.process.poll() is None:  # pragma: no cover - only on failure
                self.process.kill()


@pytest.fixture(scope="module")
def csms() -> Iterator[Serve]:
    server = Serve("--backend", "trio")
    yield server
    assert server.stop() == 0


BOOT_16 = json.dumps({"chargePointVendor": "ACME", "chargePointModel": "X1"})


# -- the entry points ---------------------------------------------------------------


def test_console_script_is_declared() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("ocpp-rpc") == "ocpp_rpc.cli:main"


def test_help_lists_every_command() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("demo", "serve", "call", "simulate"):
        assert command in done.stdout


def test_every_exit_status_is_documented() -> None:
    statuses = {value for name, value in vars(common).items() if name.startswith("EXIT_")}
    epilog = build_parser().epilog or ""
    cli_md = (DOCS / "cli.md").read_text()
    documented = cli_md[cli_md.index("**Exit status**"):].split("\n\n")[0]
    for text in (epilog, documented):
        assert {int(n) for n in re.findall(r"\b(\d+) [a-z]", text)} == statuses, text


def test_demo_json_shows_the_transaction_and_the_server_call() -> None:
    done = cli("demo", "--json", "--backend", "trio")
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    actions = {e["frame"][2] for e in events if e["event"] == "frame" and e["frame"][0] == 2}
    assert {"BootNotification", "Heartbeat", "StatusNotification", "StartTransaction",
            "MeterValues", "StopTransaction", "TransactionEvent", "GetConfiguration",
            "GetBaseReport"} <= actions
    assert {e["identity"] for e in events if e["event"] == "answered"} == {"CP1", "CP2"}
    assert events[-1]["event"] == "finished"


# -- call -----------------------------------------------------------------------------


def test_call_prints_the_result(csms: Serve) -> None:
    done = cli("call", f"{csms.url}/CP100", "BootNotification", BOOT_16,
               "--protocols", "ocpp1.6")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "Accepted"
    assert "\x1b[" not in done.stdout  # no colour on a pipe
    assert "as CP100 (ocpp1.6)" in done.stderr


def test_call_json_on_trio(csms: Serve) -> None:
    done = cli("call", f"{csms.url}/CP101", "Heartbeat", "--json", "--backend", "trio")
    assert done.returncode == 0, done.stderr
    connected, result = json_lines(done.stdout)
    assert connected == {"event": "connected", "url": csms.url, "identity": "CP101",
                         "protocol": "ocpp2.0.1"}
    assert result["event"] == "result" and result["action"] == "Heartbeat"
    assert "currentTime" in result["result"] and result["ms"] >= 0


def test_call_error_exits_1(csms: Serve) -> None:
    done = cli("call", f"{csms.url}/CP102", "NoSuchAction", "{}")
    assert done.returncode == 1
    assert "NoSuchAction failed: NotImplemented" in done.stderr
    done = cli("call", f"{csms.url}/CP102", "NoSuchAction", "--json")
    assert done.returncode == 1
    error = json_lines(done.stdout)[-1]
    assert error["event"] == "error" and error["code"] == "NotImplemented"


def test_call_file_of_calls(csms: Serve, tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text(
        "# a comment, then three notations\n"
        f'["BootNotification", {BOOT_16}]\n'
        '{"action": "Heartbeat", "params": {}}\n'
        "\n"
        'Authorize {"idTag": "TAG1"}\n'
    )
    done = cli("call", f"{csms.url}/CP103", "--file", str(calls), "--protocols", "ocpp1.6",
               "--json")
    assert done.returncode == 0, done.stderr
    results = [e for e in json_lines(done.stdout) if e["event"] == "result"]
    assert [r["action"] for r in results] == ["BootNotification", "Heartbeat", "Authorize"]
    assert results[2]["result"] == {"idTagInfo": {"status": "Accepted"}}
    # one failing call among good ones: the others still run, exit status 1
    done = cli("call", f"{csms.url}/CP103", "--file", "-", "--protocols", "ocpp1.6",
               input="Heartbeat\nBogus {}\nHeartbeat\n")
    assert done.returncode == 1
    assert done.stdout.count("Heartbeat -> ") == 2
    assert "Bogus failed: NotImplemented" in done.stderr


def test_call_usage_errors_exit_2(csms: Serve) -> None:
    done = cli("call", f"{csms.url}/CP104", "Heartbeat", "{not json")
    assert done.returncode == 2 and "not JSON" in done.stderr
    done = cli("call", "ws://127.0.0.1:1/", "Heartbeat")
    assert done.returncode == 2 and "no identity" in done.stderr


def test_call_cannot_connect_exits_3() -> None:
    done = cli("call", "ws://127.0.0.1:1/ocpp/CP1", "Heartbeat", "--json")
    assert done.returncode == 3
    assert json_lines(done.stdout)[-1]["event"] == "connect_error"


def test_call_verbose_logs_every_frame_with_identity(csms: Serve) -> None:
    done = cli("call", f"{csms.url}/CP105", "Heartbeat", "-v")
    assert done.returncode == 0, done.stderr
    frames = [line for line in done.stderr.splitlines() if "ocpp_rpc.connection" in line]
    assert any("[CP105] send [2," in line and '"Heartbeat"' in line for line in frames), frames
    assert any("[CP105] recv [3," in line and "currentTime" in line for line in frames), frames
    assert all(" DEBUG " in line for line in frames)


# -- serve ----------------------------------------------------------------------------


def test_serve_logs_frames_and_connections(csms: Serve) -> None:
    assert cli("call", f"{csms.url}/CP106", "Heartbeat").returncode == 0
    connected = csms.wait_for(lambda e: e["event"] == "connected" and e["identity"] == "CP106")
    assert connected["protocol"] == "ocpp2.0.1"
    inbound = csms.wait_for(lambda e: e["event"] == "frame" and e["remote"] == "CP106")
    assert inbound["direction"] == "in" and inbound["frame"][2] == "Heartbeat"
    outbound = csms.wait_for(lambda e: e["event"] == "frame" and e["remote"] == "CP106")
    assert outbound["direction"] == "out" and outbound["frame"][0] == 3
    csms.wait_for(lambda e: e["event"] == "disconnected" and e["identity"] == "CP106")


def test_serve_prompt_calls_a_connected_charger() -> None:
    server = Serve()
    charger = subprocess.Popen(
        [sys.executable, "-m", "ocpp_rpc", "call", f"{server.url}/CP7", "Heartbeat",
         "--protocols", "ocpp1.6", "--linger", str(TIMEOUT), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        server.wait_for(lambda e: e["event"] == "connected" and e["identity"] == "CP7")
        server.wait_for(lambda e: e["event"] == "frame" and e["direction"] == "out")
        server.command("list")
        clients = server.wait_for(lambda e: e["event"] == "clients")
        assert clients["clients"] == [{"identity": "CP7", "protocol": "ocpp1.6"}]
        server.command('CP7 Reset {"type": "Soft"}')
        result = server.wait_for(lambda e: e["event"] in ("result", "error"))
        assert result == {**result, "event": "result", "identity": "CP7", "action": "Reset",
                          "result": {"status": "Accepted"}}
        server.command('* ["GetConfiguration", {"key": ["HeartbeatInterval"]}]')
        result = server.wait_for(lambda e: e["event"] in ("result", "error"))
        assert result["result"]["configurationKey"][0]["key"] == "HeartbeatInterval"
        server.command("CP8 Reset {}")
        error = server.wait_for(lambda e: e["event"] in ("result", "error"))
        assert error["code"] == "NotConnected"
        server.command("CP7 Reset {bad")
        assert server.wait_for(lambda e: e["event"] == "usage")["command"] == "CP7 Reset {bad"
        # closing stdin stops the server, which closes the charger's connection
        assert server.stop() == 0
        assert server.wait_for(lambda e: e["event"] == "stopped")
        out, _ = charger.communicate(timeout=TIMEOUT)
    finally:
        charger.kill()
        server.process.kill()
    inbound = [e for e in json_lines(out) if e["event"] == "inbound"]
    assert [e["action"] for e in inbound] == ["Reset", "GetConfiguration"]
    assert charger.returncode == 0


def test_serve_password_handlers_and_sigterm(tmp_path: Path) -> None:
    (tmp_path / "my_handlers.py").write_text(
        "from ocpp_rpc import create_rpc_error\n"
        "def BootNotification(call):\n"
        "    return {'status': 'Rejected', 'currentTime': '2024-01-01T00:00:00Z',\n"
        "            'interval': 10}\n"
        "HANDLERS = {'DataTransfer': lambda call: {'status': 'Rejected'}}\n"
        "def register(server):\n"
        "    @server.handler('Custom')\n"
        "    async def custom(call):\n"
        "        if call.params.get('fail'):\n"
        "            raise create_rpc_error('SecurityError', 'no', {'why': 1})\n"
        "        return {'echo': call.params, 'identity': call.client.identity}\n"
    )
    server = Serve("--password", "s3cret", "--handlers", str(tmp_path / "my_handlers.py"),
                   "--no-stdin", "--quiet")
    try:
        handlers = next(e for e in server.seen if e["event"] == "handlers")
        assert handlers["actions"] == ["BootNotification", "DataTransfer"]
        refused = cli("call", f"{server.url}/CP1", "Heartbeat", "--password", "wrong")
        assert refused.returncode == 3 and "401" in refused.stderr
        assert server.wait_for(lambda e: e["event"] == "refused")["status"] == 401
        done = cli("call", f"{server.url}/CP1", "--password", "s3cret", "--json", "--file", "-",
                   input='Custom {"a": 1}\nBootNotification {}\nDataTransfer {}\n'
                   'Custom {"fail": true}\n')
        assert done.returncode == 1
        results = [e for e in json_lines(done.stdout) if e["event"] in ("result", "error")]
        assert results[0]["result"] == {"echo": {"a": 1}, "identity": "CP1"}
        assert results[1]["result"]["status"] == "Rejected"
        assert results[2]["result"] == {"status": "Rejected"}
        assert results[3]["code"] == "SecurityError" and results[3]["details"] == {"why": 1}
        assert not any(e["event"] == "frame" for e in server.seen)  # --quiet
        # --no-stdin: closing stdin does not stop it; SIGTERM does
        assert server.process.stdin is not None
        server.process.stdin.close()
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(lambda e: e["event"] == "stopped")
        assert server.process.wait(timeout=TIMEOUT) == 0
    finally:
        server.process.kill()


def test_serve_tls_and_strict(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = Serve("--tls-cert", str(tmp_path / "server.pem"), "--strict",
                   "--protocols", "ocpp1.6")
    try:
        assert server.url.startswith("wss://127.0.0.1:")
        done = cli("call", f"{server.url}/CP1", "BootNotification", BOOT_16,
                   "--ca", str(tmp_path / "ca.pem"), "--protocols", "ocpp1.6")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "Accepted"
        untrusted = cli("call", f"{server.url}/CP1", "Heartbeat", "--protocols", "ocpp1.6")
        assert untrusted.returncode == 3
        assert server.stop() == 0
    finally:
        server.process.kill()


def test_serve_bad_options_exit_2(tmp_path: Path) -> None:
    done = cli("serve", "--port", "0", "--handlers", str(tmp_path / "missing.py"))
    assert done.returncode == 2 and "no such file" in done.stderr
    done = cli("serve", "--port", "0", "--tls-key", "k.pem")
    assert done.returncode == 2 and "--tls-cert" in done.stderr
    done = cli("serve", "--port", "0", "--strict", "--protocols", "")
    assert done.returncode == 2 and "error:" in done.stderr


# -- simulate --------------------------------------------------------------------------


def test_simulate_table(csms: Serve) -> None:
    done = cli("simulate", csms.url, "--chargers", "4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("action"))
    assert header.split() == ["action", "calls", "errors", "p50", "ms", "p99", "ms"]
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[1:3] == [str(4 * CALLS_PER_SESSION), "0"]
    assert "4/4 chargers finished" in done.stdout and "calls/s" in done.stdout


def test_simulate_json_mixed_on_trio(csms: Serve) -> None:
    done = cli("simulate", csms.url, "--chargers", "6", "--protocol", "mixed", "--json",
               "--backend", "trio", "--meter-values", "3", "--ramp", "0.05")
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    rows = {e["action"]: e for e in events if e["event"] == "action"}
    assert rows["StartTransaction"]["calls"] == 3  # the 1.6 half
    assert rows["TransactionEvent"]["calls"] == 3 * (2 + 3)  # Started, 3 Updated, Ended
    assert rows["(connect)"]["calls"] == 6
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["finished"] == 6 and summary["errors"] == 0 and summary["calls_per_s"] > 0
    assert summary["calls"] == rows["total"]["calls"]


def test_simulate_against_nothing_exits_1() -> None:
    done = cli("simulate", "ws://127.0.0.1:1/ocpp", "--chargers", "2", "--json")
    assert done.returncode == 1
    summary = json_lines(done.stdout)[-1]
    assert summary["failed"] == 2 and summary["connected"] == 0
    assert "(connect)" in summary["error_samples"]


# -- stdout's reader gone (`| head`) ---------------------------------------------------


def run_until_reader_gone(*args: str, lines: int = 0) -> tuple[int, str]:
    """Run a command whose stdout reader goes away after `lines` lines, as
    ``| head`` does; -> (exit status, stderr)."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "ocpp_rpc", *args],
                                   stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            assert process.stdout is not None
            for _ in range(lines):
                assert process.stdout.readline()
            process.stdout.close()
            status = process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:  # pragma: no cover - only on failure
                process.kill()
        stderr.seek(0)
        return status, stderr.read()


@pytest.mark.parametrize("options", [["--json"], ["--backend", "trio"]])
def test_demo_into_head_stops_quietly(options: list[str]) -> None:
    status, stderr = run_until_reader_gone("demo", "--chargers", "4", *options, lines=3)
    assert (status, stderr) == (common.EXIT_BROKEN_PIPE, "")


def test_call_and_simulate_into_a_closed_pipe_stop_quietly(csms: Serve) -> None:
    status, stderr = run_until_reader_gone("call", f"{csms.url}/CP110", "Heartbeat")
    assert status == common.EXIT_BROKEN_PIPE and "Traceback" not in stderr, stderr
    status, stderr = run_until_reader_gone(
        "call", f"{csms.url}/CP111", "Heartbeat", "--json", "--linger", str(TIMEOUT))
    assert status == common.EXIT_BROKEN_PIPE and "Traceback" not in stderr, stderr
    status, stderr = run_until_reader_gone("simulate", csms.url, "--chargers", "2",
                                           "--heartbeats", "1000", "--backend", "trio")
    assert (status, stderr) == (common.EXIT_BROKEN_PIPE, "")


def test_serve_stops_when_its_reader_goes_away() -> None:
    with tempfile.TemporaryFile("w+") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "ocpp_rpc", "serve", "--port", "0", "--json", "--no-stdin"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            assert server.stdout is not None
            url = json.loads(server.stdout.readline())["url"]
            server.stdout.close()
            cli("call", f"{url}/CP1", "Heartbeat")  # its connection is the next line
            assert server.wait(timeout=TIMEOUT) == common.EXIT_BROKEN_PIPE
        finally:
            server.kill()
        stderr.seek(0)
        assert stderr.read() == ""


# -- in-process: payloads, parsing, output ---------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_simulated_session_and_default_answers_match_the_schemas(protocol: str) -> None:
    validator = builtin_validator(protocol)
    assert validator is not None
    defaults = CSMSDefaults()
    seen: list[str] = []

    async def call(action: str, params: Any) -> Any:
        validator.validate_call(action, params)
        result = defaults.answer(Call(action, params, "1", protocol, None))  # type: ignore[arg-type]
        validator.validate_result(action, result)
        seen.append(action)
        return result

    await run_session(call, protocol, meter_values=2)
    assert len(seen) == CALLS_PER_SESSION


def _sample_requests(protocol: str) -> dict[str, Any]:
    component = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
    common = {"DataTransfer": {"vendorId": "ACME"}, "ClearCache": {}}
    if protocol == "ocpp1.6":
        return {**common, "Reset": {"type": "Soft"}, "GetConfiguration": {"key": ["Nope"]},
                "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "60"},
                "RemoteStartTransaction": {"idTag": "T"},
                "RemoteStopTransaction": {"transactionId": 1},
                "TriggerMessage": {"requestedMessage": "Heartbeat"},
                "ChangeAvailability": {"connectorId": 1, "type": "Inoperative"},
                "UnlockConnector": {"connectorId": 1},
                "GetDiagnostics": {"location": "ftp://x/"},
                "UpdateFirmware": {"location": "ftp://x/", "retrieveDate": "2024-01-01T00:00:00Z"}}
    return {**common, "Reset": {"type": "Immediate"},
            "GetBaseReport": {"requestId": 1, "reportBase": "FullInventory"},
            "GetVariables": {"getVariableData": [component]},
            "SetVariables": {"setVariableData": [{**component, "attributeValue": "60"}]},
            "RequestStartTransaction": {"idToken": {"idToken": "T", "type": "Central"},
                                        "remoteStartId": 1},
            "RequestStopTransaction": {"transactionId": "t1"},
            "TriggerMessage": {"requestedMessage": "Heartbeat"},
            "ChangeAvailability": {"operationalStatus": "Inoperative"},
            "UnlockConnector": {"evseId": 1, "connectorId": 1}}


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
def test_simulated_charger_answers_match_the_schemas(protocol: str) -> None:
    validator = builtin_validator(protocol)
    assert validator is not None
    for action, params in _sample_requests(protocol).items():
        validator.validate_call(action, params)
        result = answer_as_charge_point(Call(action, params, "1", protocol, None))  # type: ignore[arg-type]
        validator.validate_result(action, result)


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
def test_every_csms_default_answer_matches_the_schemas(protocol: str) -> None:
    validator = builtin_validator(protocol)
    assert validator is not None
    defaults = CSMSDefaults()
    table = defaults.v16 if protocol == "ocpp1.6" else defaults.v2
    for action in table:
        for params in ({}, {"idTag": "T", "idToken": {"idToken": "T", "type": "Central"}}):
            validator.validate_result(
                action, defaults.answer(Call(action, params, "1", protocol, None)))  # type: ignore[arg-type]
    with pytest.raises(type(create_rpc_error("NotImplemented"))):
        other = "TransactionEvent" if protocol == "ocpp1.6" else "StartTransaction"
        defaults.answer(Call(other, {}, "1", protocol, None))  # type: ignore[arg-type]


def test_parse_call_line_notations() -> None:
    assert parse_call_line('Reset {"type": "Soft"}') == ("Reset", {"type": "Soft"})
    assert parse_call_line("Heartbeat") == ("Heartbeat", {})
    assert parse_call_line('["Reset", {"type": "Hard"}]') == ("Reset", {"type": "Hard"})
    assert parse_call_line('{"action": "Heartbeat"}') == ("Heartbeat", {})
    assert parse_call_line("  # comment") is None
    with pytest.raises(ValueError):
        parse_call_line('[1, 2]')


def test_split_url() -> None:
    assert split_url("ws://h:9/ocpp/CP%201", None) == ("ws://h:9/ocpp", "CP 1")
    assert split_url("wss://h/CP1", None) == ("wss://h", "CP1")
    assert split_url("ws://h/ocpp", "CP2") == ("ws://h/ocpp", "CP2")
    with pytest.raises(UsageError):
        split_url("http://h/CP1", None)


class _Terminal:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = _Terminal()
    output = Output(terminal)  # type: ignore[arg-type]
    output.frame("CSMS", "CP1", True, '[2,"1","Heartbeat",{}]')
    assert "\x1b[36m" in terminal.text
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Output(_Terminal()).colour  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_loopback_pair_sanity() -> None:
    """The session helper runs against a real server too (both backends)."""
    from ocpp_rpc import RPCServer

    async with RPCServer(protocols=["ocpp1.6"]) as server:
        CSMSDefaults().register(server)
        listening = await server.listen()
        async with RPCClient(f"ws://127.0.0.1:{listening.port}", "CP1",
                             protocols=["ocpp1.6"]) as client:
            with anyio.fail_after(5):
                await run_session(client.call, "ocpp1.6", transactions=2)

