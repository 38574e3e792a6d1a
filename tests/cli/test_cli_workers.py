"""``ocpp-rpc serve --workers N --redis URL``: usage errors (the workers
themselves are tested against a real Redis in tests/cluster/test_cluster_serve.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ocpp_rpc.cli.main import build_parser

TIMEOUT = 20


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OCPP_RPC_REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "ocpp_rpc", "serve", "--port", "0", "--no-stdin", *args],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )


def test_workers_without_redis_is_a_usage_error() -> None:
    done = serve("--workers", "2")
    assert done.returncode == 2
    assert "--workers 2 needs --redis URL" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("option", [("--workers", "0"), ("--lease", "0")])
def test_bad_cluster_options_are_usage_errors(option: tuple[str, str]) -> None:
    done = serve(*option, "--redis", "redis://127.0.0.1:1/0")
    assert done.returncode == 2
    assert f"{option[0]} must be" in done.stderr


def test_the_cluster_flags_are_documented_and_the_worker_flag_hidden() -> None:
    help_text = next(
        action for action in build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    ).choices["serve"].format_help()
    for flag in ("--workers N", "--redis URL", "--redis-prefix PREFIX", "--lease SECONDS"):
        assert flag in help_text
    assert "--worker-of" not in help_text
