"""Durable calls: the store a charge point keeps its transaction messages in
while it cannot reach the CSMS (OCPP 1.6 §3.7; 2.0.1/2.1 E13, E14).

```python
from ocpp_rpc.durable import SQLiteStore

async with RPCClient(url, "CP1", store=SQLiteStore("station.db")) as client:
    await client.call("TransactionEvent", {...}, durable=True)
```

`DurableStore` is the interface `RPCClient(store=...)` uses; `SQLiteStore`
keeps the calls in a file (one fsync per write, committed before the call
is sent) and `MemoryStore` in memory (for tests: it survives a reconnect,
not a crash). Errors: `StoreError` and its subclasses `StoreFull`,
`StoreCorrupt`, `StoreInUse`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = (
    "DEFAULT_MAX_MESSAGES",
    "DurableStore",
    "MemoryStore",
    "SQLiteStore",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreInUse",
    "StoredCall",
)

T = TypeVar("T")

#: Calls a store holds by default (about a week of one-minute meter values
#: on a dozen connectors; a few hundred bytes each on disk).
DEFAULT_MAX_MESSAGES: Final = 100_000

# `PRAGMA application_id` of our store files ("OCPJ"), so that another
# program's SQLite database is refused instead of being written into.
_APPLICATION_ID: Final = 0x4F43504A
_SCHEMA_VERSION: Final = 1


class StoreError(Exception):
    """The store cannot be used (unreadable, not a store, in use, full)."""


class StoreFull(StoreError):
    """The store holds `max_messages` calls: the new durable call was refused
    and nothing already stored was touched."""


class StoreCorrupt(StoreError):
    """The store file is damaged or is not an ocpp_rpc store. It is left
    untouched: move it aside (and keep it for inspection) to start afresh."""


class StoreInUse(StoreError):
    """Another process (or another open store object) holds the store file."""


@dataclass(frozen=True, slots=True)
class StoredCall:
    """One durable call in a store.

    `key` orders the calls (oldest first); `message_id` identifies the call
    for its whole life (the `durable_result` event carries it); `attempts`
    counts the attempts the CSMS answered with a CALLERROR.
    """

    key: int
    message_id: str
    method: str
    params: Any
    attempts: int = 0


@runtime_checkable
class DurableStore(Protocol):
    """Where `RPCClient(store=...)` keeps durable calls until they are
    delivered or dropped.

    The client opens the store when its ``async with`` starts and closes it
    when it ends; between the two only the client uses it, one operation at
    a time. Every method that returns must have made its change durable
    (`append` above all: the call is sent only after it returns). A store
    that cannot be opened raises `StoreError` (`StoreCorrupt`, `StoreInUse`)
    from `open`, never empties itself.
    """

    @property
    def attempts(self) -> int:
        """Attempts in all for a call the CSMS answers with CALLERRORs."""
        ...

    @property
    def interval(self) -> float:
        """Seconds; the wait before an attempt is ``interval * previous attempts``."""
        ...

    @property
    def max_messages(self) -> int:
        """How many calls the store holds at most."""
        ...

    async def open(self) -> None:
        """Open (or create) the store; raises `StoreError` if it cannot be used."""
        ...

    async def close(self) -> None:
        """Release the store (a no-op if it is not open)."""
        ...

    async def append(self, message_id: str, method: str, params: Any) -> StoredCall:
        """Store a new call after every other; `StoreFull` at `max_messages`."""
        ...

    async def first(self) -> StoredCall | None:
        """The oldest call, or None if the store is empty."""
        ...

    async def record_attempt(self, key: int) -> StoredCall:
        """Count one more failed attempt of the call `key`; returns it updated."""
        ...

    async def remove(self, key: int) -> None:
        """Forget the call `key` (delivered or dropped)."""
        ...

    async def count(self) -> int:
        """How many calls the store holds."""
        ...


class _Limits:
    """The retry rule and size limit every store of ours keeps (checked once)."""

    def __init__(self, attempts: int, interval: float, max_messages: int) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        if not interval >= 0:
            raise ValueError(f"interval must be a number of seconds >= 0, not {interval}")
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        self._attempts = attempts
        self._interval = float(interval)
        self._max_messages = max_messages

    @property
    def attempts(self) -> int:
        return self._attempts

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def max_messages(self) -> int:
        return self._max_messages


def _encode(params: Any) -> str:
    """The params as stored; refuses what JSON (and so OCPP-J) cannot carry."""
    try:
        return json.dumps(params, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"params of a durable call must be JSON: {exc}") from exc


def _is_utf8(text: object) -> bool:
    """Whether stored text (read as a BLOB) is something sqlite3 can decode."""
    if not isinstance(text, bytes):  # NULL
        return False
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


class MemoryStore(_Limits):
    """A `DurableStore` in memory: for tests and examples. It keeps its calls
    across reconnects and across ``async with`` blocks of one process, not
    across a crash. Params are copied (through JSON) when stored."""

    def __init__(
        self,
        *,
        attempts: int = 3,
        interval: float = 30.0,
        max_messages: int = DEFAULT_MAX_MESSAGES,
    ) -> None:
        super().__init__(attempts, interval, max_messages)
        self._calls: dict[int, StoredCall] = {}  # insertion order is the call order
        self._next_key = 1
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("the store is not open")

    async def open(self) -> None:
        if self._open:
            raise StoreInUse("this MemoryStore is already open")
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def append(self, message_id: str, method: str, params: Any) -> StoredCall:
        self._check_open()
        copy = json.loads(_encode(params))
        await anyio.lowlevel.checkpoint()
        if len(self._calls) >= self._max_messages:
            raise StoreFull(f"the store is full ({self._max_messages} calls)")
        call = StoredCall(self._next_key, message_id, method, copy)
        self._next_key += 1
        self._calls[call.key] = call
        return call

    async def first(self) -> StoredCall | None:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        return next(iter(self._calls.values()), None)

    async def record_attempt(self, key: int) -> StoredCall:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        call = self._calls[key] = replace(self._calls[key], attempts=self._calls[key].attempts + 1)
        return call

    async def remove(self, key: int) -> None:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        self._calls.pop(key, None)

    async def count(self) -> int:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        return len(self._calls)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._calls)} calls)"


class SQLiteStore(_Limits):
    """A `DurableStore` in an SQLite file: survives a crash, SIGKILL or power
    cut once `append` has returned.

    Settings: ``journal_mode=WAL`` with ``synchronous=FULL`` (each commit
    fsyncs the write-ahead log before it returns: one fsync per change, and
    no commit can roll back after a power cut, which ``NORMAL`` allows in
    WAL mode) and ``locking_mode=EXCLUSIVE`` (the file stays locked while
    open, so a second process gets `StoreInUse`; the WAL index then lives in
    memory: no ``-shm`` file). A file that is damaged or is not a store
    raises `StoreCorrupt` from `open` and is left as it is.

    Every SQLite operation runs in a worker thread (`anyio.to_thread`), one
    at a time (a capacity-1 limiter), on one connection: the event loop
    never waits for the disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        attempts: int = 3,
        interval: float = 30.0,
        max_messages: int = DEFAULT_MAX_MESSAGES,
    ) -> None:
        super().__init__(attempts, interval, max_messages)
        self.path = os.fspath(path)
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def _run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        db, limiter = self._db, self._limiter
        if db is None or limiter is None:
            raise StoreError(f"{self!r} is not open")
        try:
            return await anyio.to_thread.run_sync(function, db, limiter=limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    async def open(self) -> None:
        if self._db is not None:
            raise StoreInUse(f"{self!r} is already open")
        limiter = anyio.CapacityLimiter(1)
        self._db, self._count = await anyio.to_thread.run_sync(self._open, limiter=limiter)
        self._limiter = limiter

    def _open(self) -> tuple[sqlite3.Connection, int]:
        path = self.path
        try:
            # check_same_thread=False: the worker thread may differ from call
            # to call; the capacity-1 limiter keeps the use sequential.
            db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            # Read only: another program's database is refused before WAL mode
            # rewrites its header (and leaves -wal and -shm files beside it).
            self._check_owner(db)
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise StoreError(f"{path}: cannot use a write-ahead log (journal mode {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN EXCLUSIVE")  # takes the lock now and keeps it until close
            try:
                count = self._check_schema(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            db.close()
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or (
                "locked" in str(exc)
            ):
                raise StoreInUse(f"the store {path} is in use by another process") from exc
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreCorrupt(f"the store {path} is damaged: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return db, count

    def _check_owner(self, db: sqlite3.Connection) -> bool:
        """True for a new (empty) file; raises `StoreCorrupt` for a database
        that is not a store."""
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'")}
        if application_id == 0 and not tables:
            return True
        if application_id != _APPLICATION_ID or "calls" not in tables:
            raise StoreCorrupt(f"{self.path} is an SQLite database but not an ocpp_rpc store")
        return False

    def _check_schema(self, db: sqlite3.Connection) -> int:
        """Create the schema in a new file, or check an existing one; returns the call count."""
        path = self.path
        if self._check_owner(db):  # again, now under the lock
            db.execute(
                "CREATE TABLE calls (key INTEGER PRIMARY KEY, message_id TEXT NOT NULL, "
                "method TEXT NOT NULL, params TEXT NOT NULL, attempts INTEGER NOT NULL)"
            )
            db.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            return 0
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version != _SCHEMA_VERSION:
            raise StoreCorrupt(f"{path}: store version {version}, expected {_SCHEMA_VERSION}")
        problems = [row for (row,) in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreCorrupt(f"the store {path} is damaged: {'; '.join(problems[:5])}")
        # sqlite3 decodes text as UTF-8 when it reads a call; a damaged byte
        # that is not UTF-8 passes quick_check and json_valid (SQLite does not
        # check encodings), and would fail every `first` instead of this open.
        count = bad = 0
        for valid_json, *texts in db.execute(
            "SELECT json_valid(params), CAST(message_id AS BLOB), CAST(method AS BLOB), "
            "CAST(params AS BLOB) FROM calls"
        ):  # each column alone: a character cut across two would decode once joined
            count += 1
            if not valid_json or not all(map(_is_utf8, texts)):
                bad += 1
        if bad:
            raise StoreCorrupt(f"the store {path} is damaged: {bad} unreadable call(s)")
        return count

    async def close(self) -> None:
        db, limiter = self._db, self._limiter
        if db is None or limiter is None:
            return
        self._db = self._limiter = None
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(db.close, limiter=limiter)

    async def append(self, message_id: str, method: str, params: Any) -> StoredCall:
        text = _encode(params)

        def insert(db: sqlite3.Connection) -> int:
            # `_count` changes only here and in `remove`, one operation at a
            # time (the limiter), and only this object writes: the lock is ours.
            if self._count >= self._max_messages:
                raise StoreFull(f"the store {self.path} is full ({self._max_messages} calls)")
            cursor = db.execute(
                "INSERT INTO calls (message_id, method, params, attempts) VALUES (?, ?, ?, 0)",
                (message_id, method, text),
            )
            assert cursor.lastrowid is not None
            self._count += 1
            return cursor.lastrowid

        key = await self._run(insert)  # autocommit: committed (and fsynced) when it returns
        return StoredCall(key, message_id, method, json.loads(text))

    async def first(self) -> StoredCall | None:
        def select(db: sqlite3.Connection) -> list[Any]:
            # fetchall: a statement left unfinished would keep its transaction open.
            return db.execute(
                "SELECT key, message_id, method, params, attempts FROM calls ORDER BY key LIMIT 1"
            ).fetchall()

        rows = await self._run(select)
        if not rows:
            return None
        key, message_id, method, params, attempts = rows[0]
        return StoredCall(key, message_id, method, json.loads(params), attempts)

    async def record_attempt(self, key: int) -> StoredCall:
        def update(db: sqlite3.Connection) -> list[Any]:
            return db.execute(
                "UPDATE calls SET attempts = attempts + 1 WHERE key = ? "
                "RETURNING key, message_id, method, params, attempts",
                (key,),
            ).fetchall()

        rows = await self._run(update)
        if not rows:
            raise KeyError(key)
        key, message_id, method, params, attempts = rows[0]
        return StoredCall(key, message_id, method, json.loads(params), attempts)

    async def remove(self, key: int) -> None:
        def delete(db: sqlite3.Connection) -> None:
            self._count -= db.execute("DELETE FROM calls WHERE key = ?", (key,)).rowcount

        await self._run(delete)

    async def count(self) -> int:
        if self._db is None:
            raise StoreError(f"{self!r} is not open")
        await anyio.lowlevel.checkpoint()
        return self._count
