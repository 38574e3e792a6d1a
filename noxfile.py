"""Developer tasks: `nox` runs lint, typecheck, the full test suite (both
anyio backends, interop peers included) and the documentation build."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
SHARED_INTEROP = Path(os.environ.get("OCPP_RPC_SHARED_INTEROP", ROOT.parent / "shared" / "interop"))
INTEROP = ROOT / ".interop"  # a private, git-ignored copy with its dependencies installed


def install_interop(session: nox.Session) -> dict[str, str]:
    """Copy ../shared/interop here, `npm ci` the Node peers and make a venv for
    the Python peers; returns the environment the interop tests need."""
    if not (SHARED_INTEROP / "peers.py").exists():
        session.warn(f"no interop peers at {SHARED_INTEROP}: interop tests will be skipped")
        return {}
    def make_writable() -> None:  # the shared files are read-only
        for path in INTEROP.rglob("*"):
            if "node_modules" not in path.parts and "venv" not in path.parts:
                path.chmod(path.stat().st_mode | 0o200)

    if INTEROP.exists():
        make_writable()
    shutil.copytree(
        SHARED_INTEROP, INTEROP, dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("node_modules", ".venv", "__pycache__"),
    )
    make_writable()
    node_dir = INTEROP / "node"
    if not (node_dir / "node_modules" / "ocpp-rpc").exists():
        session.run(
            "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error",
            "--prefix", str(node_dir), external=True,
        )
    venv = INTEROP / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        session.run("python3", "-m", "venv", str(venv), external=True)
    marker = venv / ".installed"
    if not marker.exists():
        session.run(
            str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "-r", str(INTEROP / "python" / "requirements.txt"), external=True,
        )
        marker.touch()
    return {"OCPP_RPC_INTEROP": str(INTEROP), "INTEROP_PYTHON": str(python)}


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on asyncio and trio, interop peers included."""
    session.install("-e", ".[test]")
    env = install_interop(session)
    session.run("pytest", *session.posargs, env=env)


@nox.session
def interop(session: nox.Session) -> None:
    """Only the tests that drive the real peers (Node ocpp-rpc, Python ocpp)."""
    session.install("-e", ".[test]")
    env = install_interop(session)
    session.run("pytest", "-m", "interop", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check (lint rules; formatting is not enforced)."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "ocpp_rpc")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation (mkdocs; API reference from the docstrings) into
    build/site, failing on any warning."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs", "build", "--strict", *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # Material's end-of-life banner, not a doc problem
    )


@nox.session
def bench(session: nox.Session) -> None:
    """benchmarks/bench.py: ocpp_rpc (asyncio, uvloop, trio) side by side with Node
    ocpp-rpc, mobilityhouse ocpp + websockets and a bare websockets echo; prints
    one table. Not a default session. Pass options after `--`, e.g.
    `nox -s bench -- --runs 5 --conns 10000`."""
    session.install("-e", ".[trio,uvloop,fast]")
    env = install_interop(session)
    session.run("python", "benchmarks/bench.py", *session.posargs, env=env)


@nox.session
def soak(session: nox.Session) -> None:
    """The long soak tests (`pytest -m soak`, both backends: 1,000-client reconnect
    storm, 10,000 connect/disconnect cycles), then benchmarks/soak.py at its
    default size (2,000 clients, both backends, fault injection)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "soak", *session.posargs)
    for backend in ("asyncio", "trio"):
        session.run("python", "benchmarks/soak.py", "--backend", backend)
