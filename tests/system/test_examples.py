"""Every script in examples/ runs as it is, on loopback, and ends by itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import free_port

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
              "server_call.py", "handlers.py", "test_my_csms.py", "fastapi_csms.py"}
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


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server (or valkey-server) of the cluster tests, for the
    cluster example."""
    pytest.importorskip("coredis")
    pytest.importorskip("fastapi")
    from cluster.redisserver import RedisServer, redis_binary

    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server or valkey-server (see tests/cluster/conftest.py)")
    with tempfile.TemporaryDirectory(prefix="ocpp-redis-") as directory:
        server = RedisServer(binary, Path(directory))
        server.start()
        try:
            yield server.url
        finally:
            server.kill()


def start_example(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(EXAMPLES / script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP request, straight to loopback (no proxy): status and JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, method=method,
                                     headers={"content-type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def answered(method: str, url: str) -> int | None:
    """The status of a request, None while nothing listens there yet."""
    try:
        return http(method, url)[0]
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        raise


async def test_fastapi_csms(redis_url: str, anyio_backend: str) -> None:
    """The API process (FastAPI: uvicorn on asyncio, hypercorn on Trio) calls
    real chargers connected to the CSMS process, through a real Redis."""
    from ocpp_rpc import Call, RPCClient, create_rpc_error

    api_port = await free_port()
    csms = start_example("fastapi_csms.py", "csms", "--redis", redis_url, "--port", "0",
                         "--backend", anyio_backend)
    api = start_example("fastapi_csms.py", "api", "--redis", redis_url, "--port", str(api_port),
                        "--backend", anyio_backend, "--call-timeout", "1")
    base = f"http://127.0.0.1:{api_port}/chargers"
    resets: list[Any] = []

    def accept(call: Call) -> Any:
        resets.append(call.params)
        return {"status": "Accepted"}

    def refuse(call: Call) -> Any:
        raise create_rpc_error("NotSupported", "no reset here", {"why": "test"})

    async def hang(call: Call) -> Any:
        await anyio.sleep_forever()

    try:
        assert csms.stdout is not None
        line = await anyio.to_thread.run_sync(csms.stdout.readline)
        match = re.search(r"listening on (ws://\S+)", line)
        assert match, line + (csms.stderr.read() if csms.stderr else "")
        with anyio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                for identity, handler in (("CP-OK", accept), ("CP-ERR", refuse),
                                          ("CP-HANG", hang)):
                    charger = RPCClient(match.group(1), identity, protocols=["ocpp2.0.1"],
                                        reconnect=False)
                    charger.handle("Reset", handler)
                    await stack.enter_async_context(charger)
                # The API is up and the chargers registered: a subprocess says
                # neither by itself, so ask until it does.
                for identity in ("CP-OK", "CP-ERR", "CP-HANG"):
                    while (await anyio.to_thread.run_sync(
                            answered, "GET", f"{base}/{identity}")) != 200:
                        assert api.poll() is None, api.stderr.read() if api.stderr else ""
                        await anyio.sleep(0.05)

                status, body = await anyio.to_thread.run_sync(
                    http, "POST", f"{base}/CP-OK/reset", {"type": "Immediate"})
                assert (status, body) == (200, {"status": "Accepted"})
                assert resets == [{"type": "Immediate"}]

                status, body = await anyio.to_thread.run_sync(
                    http, "POST", f"{base}/CP-ERR/reset", {"type": "OnIdle"})
                assert status == 502
                assert body["detail"] == {"code": "NotSupported", "message": "no reset here",
                                          "details": {"why": "test"}}

                status, body = await anyio.to_thread.run_sync(
                    http, "POST", f"{base}/CP-HANG/reset", {"type": "OnIdle"})
                assert status == 504 and "did not answer" in body["detail"]

                status, body = await anyio.to_thread.run_sync(
                    http, "POST", f"{base}/CP-NOPE/reset", None)
                assert status == 404 and "not connected" in body["detail"]

                status, body = await anyio.to_thread.run_sync(
                    http, "POST", f"{base}/CP-OK/reset", {"type": "Sometime"})
                assert status == 422  # FastAPI validates the body before any call
                assert resets == [{"type": "Immediate"}]
    finally:
        for process in (api, csms):
            process.terminate()
            process.wait(timeout=TIMEOUT)
