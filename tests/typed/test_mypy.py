"""The typed payloads under `mypy --strict`, as a user's code meets them: the
programs in ``programs/`` are checked by one mypy run, every error must be
announced on its line by a ``# E: <part of the message>`` comment and every
announced error must occur (so the good programs must pass, and each bad line
must fail for the announced reason).

mypy runs on CI's Python (3.11) only: pyproject.toml pins mypy's
``python_version``, so the verdict is the same on every interpreter, and a
cold run (a clean clone, no cache) costs ~30 s; the cache in
``.mypy_cache/typed-tests`` makes later runs take a few seconds."""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = sorted((Path(__file__).parent / "programs").glob("*.py"))
CACHE = ROOT / ".mypy_cache" / "typed-tests"
_EXPECTED = re.compile(r"# E: (.*?)\s*(?=# E:|$)")
_ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def expected_errors() -> dict[tuple[str, int], list[str]]:
    expected: dict[tuple[str, int], list[str]] = defaultdict(list)
    for program in PROGRAMS:
        for number, line in enumerate(program.read_text("utf-8").splitlines(), 1):
            for part in _EXPECTED.findall(line):
                expected[program.name, number].append(part)
    return expected


def test_the_programs_are_there() -> None:
    names = {program.name for program in PROGRAMS}
    assert {"good_v16_charge_point.py", "good_v201_csms.py", "good_v21.py"} <= names
    announced = {name for name, _ in expected_errors()}
    assert {name for name in names if name.startswith("bad_")} == announced


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="mypy's verdict does not depend on the interpreter"
)
def test_mypy_strict_accepts_the_good_programs_and_names_each_bad_line() -> None:
    api = pytest.importorskip("mypy.api")
    stdout, stderr, status = api.run([
        "--strict",
        "--config-file", str(ROOT / "pyproject.toml"),
        "--cache-dir", str(CACHE),
        "--no-pretty",
        "--no-error-summary",
        *map(str, PROGRAMS),
    ])
    assert status in (0, 1), stderr  # 2: mypy itself failed
    # Errors in the programs only: the package's own are `mypy ocpp_rpc`'s job
    # (CI's typecheck session), and an older mypy (the `minimums` session) may
    # see some there that say nothing about the programs.
    names = {program.name for program in PROGRAMS}
    found: dict[tuple[str, int], list[str]] = defaultdict(list)
    for line in stdout.splitlines():
        match = _ERROR.match(line)
        if match and Path(match["path"]).name in names:
            found[Path(match["path"]).name, int(match["line"])].append(match["message"])
    expected = expected_errors()
    problems = []
    for where in sorted(found.keys() | expected.keys()):
        for message in found.get(where, []):
            if not any(part in message for part in expected.get(where, [])):
                problems.append(f"{where[0]}:{where[1]}: unexpected error: {message}")
        for part in expected.get(where, []):
            if not any(part in message for message in found.get(where, [])):
                problems.append(f"{where[0]}:{where[1]}: no error containing {part!r}")
    assert not problems, "\n".join(problems)
