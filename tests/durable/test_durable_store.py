"""The stores on their own: order, limits, attempts, restart, and the SQLite
file's failures (damaged, not a store, held by another process)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from ocpp_rpc.durable import (
    DurableStore,
    MemoryStore,
    SQLiteStore,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreInUse,
)

pytestmark = pytest.mark.anyio

StoreFactory = Callable[..., DurableStore]


@pytest.fixture(params=["sqlite", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "sqlite":
        return lambda **limits: SQLiteStore(tmp_path / "station.db", **limits)
    return lambda **limits: MemoryStore(**limits)


async def test_calls_come_out_oldest_first(make_store: StoreFactory) -> None:
    """`first` is always the oldest call; removing it reveals the next."""
    store = make_store()
    await store.open()
    for n in range(5):
        stored = await store.append(f"id{n}", "MeterValues", {"n": n})
        assert (stored.message_id, stored.method, stored.params, stored.attempts) == (
            f"id{n}", "MeterValues", {"n": n}, 0)
    assert await store.count() == 5
    seen = []
    while (first := await store.first()) is not None:
        seen.append(first.params["n"])
        await store.remove(first.key)
    assert seen == [0, 1, 2, 3, 4]
    assert await store.count() == 0
    await store.close()


async def test_params_are_copied_when_stored(make_store: StoreFactory) -> None:
    """Changing the caller's dict afterwards changes nothing stored."""
    store = make_store()
    await store.open()
    params = {"meterValue": [{"v": 1}]}
    await store.append("a", "MeterValues", params)
    params["meterValue"].append({"v": 2})
    first = await store.first()
    assert first is not None and first.params == {"meterValue": [{"v": 1}]}
    await store.close()


async def test_params_that_json_cannot_carry_are_refused(make_store: StoreFactory) -> None:
    """A call that could never be sent is refused before it is stored."""
    store = make_store()
    await store.open()
    with pytest.raises(TypeError, match="JSON"):
        await store.append("a", "X", {"when": object()})
    with pytest.raises(TypeError, match="JSON"):
        await store.append("a", "X", {"nan": float("nan")})
    assert await store.count() == 0
    await store.close()


async def test_full_store_refuses_and_keeps_what_it_holds(make_store: StoreFactory) -> None:
    """At `max_messages` a new call raises StoreFull; the stored ones are intact."""
    store = make_store(max_messages=3)
    await store.open()
    for n in range(3):
        await store.append(f"id{n}", "M", {"n": n})
    with pytest.raises(StoreFull, match="full"):
        await store.append("id3", "M", {"n": 3})
    assert await store.count() == 3
    first = await store.first()
    assert first is not None
    await store.remove(first.key)
    await store.append("id3", "M", {"n": 3})  # room again
    assert await store.count() == 3
    await store.close()


async def test_concurrent_appends_never_exceed_the_limit(make_store: StoreFactory) -> None:
    store = make_store(max_messages=3)
    await store.open()
    outcomes: list[str] = []

    async def append(n: int) -> None:
        try:
            await store.append(f"id{n}", "M", {"n": n})
            outcomes.append("stored")
        except StoreFull:
            outcomes.append("full")

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(append, n)
    assert sorted(outcomes) == ["full"] * 3 + ["stored"] * 3
    assert await store.count() == 3
    await store.close()


async def test_attempts_are_counted_per_call(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    first = await store.append("a", "M", {})
    await store.append("b", "M", {})
    assert (await store.record_attempt(first.key)).attempts == 1
    assert (await store.record_attempt(first.key)).attempts == 2
    head = await store.first()
    assert head is not None and (head.message_id, head.attempts) == ("a", 2)
    await store.close()


async def test_calls_survive_closing_and_reopening(make_store: StoreFactory) -> None:
    """A restart (close, open) finds every call, in order, with its attempts."""
    store = make_store()
    await store.open()
    for n in range(3):
        await store.append(f"id{n}", "M", {"n": n})
    first = await store.first()
    assert first is not None
    await store.record_attempt(first.key)
    await store.close()
    await store.open()
    assert await store.count() == 3
    again = await store.first()
    assert again is not None and (again.message_id, again.attempts) == ("id0", 1)
    await store.close()


async def test_sqlite_calls_survive_a_new_store_object(tmp_path: Path) -> None:
    """Another SQLiteStore on the same file (the next process) sees the calls."""
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    for n in range(3):
        await store.append(f"id{n}", "StopTransaction", {"n": n})
    await store.close()
    reopened = SQLiteStore(tmp_path / "s.db")
    await reopened.open()
    assert await reopened.count() == 3
    first = await reopened.first()
    assert first is not None and first.params == {"n": 0}
    await reopened.close()


async def test_sqlite_settings_are_wal_and_full_sync(tmp_path: Path) -> None:
    """The durability settings docs/durable.md promises are those in force."""
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    db = store._db  # the settings live on the connection; read them there
    assert db is not None
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert db.execute("PRAGMA locking_mode").fetchone() == ("exclusive",)
    await store.close()


async def test_a_damaged_file_fails_loudly_and_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    garbage = b"this is not an SQLite database " * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreCorrupt, match="damaged"):
        await SQLiteStore(path).open()
    assert path.read_bytes() == garbage


async def test_a_truncated_store_fails_loudly(tmp_path: Path) -> None:
    """A store cut short (a torn copy, a disk error) is refused, not emptied."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    for n in range(60):
        await store.append(f"id{n}", "M", {"payload": "x" * 1000, "n": n})
    await store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreCorrupt):
        await SQLiteStore(path).open()
    assert len(path.read_bytes()) == len(data) // 2


async def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """Refused before anything is changed: not switched to WAL (its header
    and journal mode), no -wal or -shm file beside it."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE settings (key TEXT, value TEXT)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="not an ocpp_rpc store"):
        await SQLiteStore(path).open()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["other.db"]


@pytest.mark.parametrize("damage", ["params", "across-columns"])
async def test_a_call_that_is_not_utf8_is_refused_at_open(tmp_path: Path, damage: str) -> None:
    """Bit rot in a stored call: one byte of its params changed to 0xFF, or
    the last byte of its message id and the first of its method changed so
    that each column alone is not UTF-8 but the two side by side are (é).
    SQLite's quick_check and json_valid still pass, but the call cannot be
    read. The store is refused at open (StoreCorrupt) instead of failing
    every `first` later, and the file is left as it was."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    for n in range(3):
        await store.append(f"id{n}", "MeterValues", {"n": n, "pad": "abcdefghij"})
    await store.close()
    data = bytearray(path.read_bytes())
    if damage == "params":
        data[data.index(b'"n":1,"pad":"abc') + 14] = 0xFF
    else:
        at = data.index(b"id1MeterValues")
        data[at + 2 : at + 4] = "é".encode()  # 0xC3 ends the id, 0xA9 starts the method
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as db:  # what SQLite alone sees: nothing wrong
        assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert db.execute("SELECT min(json_valid(params)) FROM calls").fetchone() == (1,)
    db.close()
    damaged = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="unreadable"):
        await SQLiteStore(path).open()
    assert path.read_bytes() == damaged


async def test_an_unreadable_path_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        await SQLiteStore(tmp_path / "no-such-dir" / "s.db").open()


async def test_a_store_held_by_another_process_is_refused(tmp_path: Path) -> None:
    """Two processes on one store file: the second gets StoreInUse."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    await store.append("a", "M", {})
    probe = (
        "import anyio, sys\n"
        "from ocpp_rpc.durable import SQLiteStore, StoreInUse\n"
        "try:\n"
        f"    anyio.run(SQLiteStore({str(path)!r}).open)\n"
        "except StoreInUse as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    with anyio.fail_after(30):
        other = await anyio.run_process([sys.executable, "-c", probe], check=False)
    assert other.returncode == 3, other.stderr.decode()
    assert "in use by another process" in other.stdout.decode()
    await store.close()
    # Released on close: the next process may open it.
    reopened = SQLiteStore(path)
    await reopened.open()
    assert await reopened.count() == 1
    await reopened.close()


async def test_one_store_object_opens_once(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    with pytest.raises(StoreInUse):
        await store.open()
    await store.close()


async def test_a_closed_store_refuses_work(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(StoreError):
        await store.append("a", "M", {})


@pytest.mark.parametrize("limits", [{"attempts": 0}, {"interval": -1.0},
                                    {"max_messages": 0}, {"interval": float("nan")}])
def test_limits_are_checked(limits: dict[str, float], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "s.db", **limits)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MemoryStore(**limits)  # type: ignore[arg-type]


def test_a_client_without_a_store_loads_no_sqlite3() -> None:
    """The store machinery (and sqlite3) loads only for a client given a store."""
    code = (
        "import sys, ocpp_rpc; ocpp_rpc.RPCClient('ws://127.0.0.1:9', 'CP1');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlite3'"
        " or m in ('ocpp_rpc.durable', 'ocpp_rpc._rpc.durable_queue')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
