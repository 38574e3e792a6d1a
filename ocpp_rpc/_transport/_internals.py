"""Every private name of a dependency that `_transport` relies on, in one place.

Each serves only a faster path: when one no longer holds (the dependency
changed), the caller falls back to the public way and keeps working, slower.
`tests/transport/test_internals.py` fails loudly, naming the dependency and
its version, as soon as one of them no longer holds.

- anyio: the stream classes of its backends are named ``SocketStream`` in the
  modules ``anyio._backends._asyncio`` and ``anyio._backends._trio``; both
  have ``_closed``; the asyncio one keeps its asyncio transport in
  ``_transport`` and its protocol in ``_protocol``, whose ``read_queue``
  (a deque of bytes received and not yet read), ``exception`` and
  ``is_at_eof`` tell what has arrived (`adoptable_asyncio_stream`,
  `is_open_trio_stream`).
- anyio: the TCP listeners of its backends are ``TCPSocketListener`` in the
  modules above (`listening_sockets`).
- anyio: `anyio.abc.SocketStream` takes its socket attributes from the abstract
  property ``_raw_socket``, which our stream classes define (`RAW_SOCKET`).
- asyncio: a selector transport reads ``max_size`` bytes at a time
  (`set_read_size`); ``asyncio.tasks._enter_task`` and ``_leave_task`` make a
  task the current one while a callback runs on its behalf (`as_task`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeVar

_T = TypeVar("_T")

#: The abstract property of `anyio.abc.SocketStream` that a subclass defines.
RAW_SOCKET: Final = "_raw_socket"
ANYIO_ASYNCIO: Final = "anyio._backends._asyncio"
ANYIO_TRIO: Final = "anyio._backends._trio"


def _is_anyio_socket_stream(stream: object, module: str) -> bool:
    return type(stream).__name__ == "SocketStream" and type(stream).__module__ == module


def listening_sockets(listener: object, module: str) -> list[Any] | None:
    """The listening sockets of `listener`, a `MultiListener` (as
    `anyio.create_tcp_listener` makes) of TCP listeners of the anyio backend
    `module` (`ANYIO_ASYNCIO`, `ANYIO_TRIO`); else None."""
    from anyio.abc import SocketAttribute

    listeners = getattr(listener, "listeners", None)
    if not listeners or not all(
        type(each).__name__ == "TCPSocketListener" and type(each).__module__ == module
        for each in listeners
    ):
        return None
    return [each.extra(SocketAttribute.raw_socket) for each in listeners]


def adoptable_asyncio_stream(stream: object) -> tuple[asyncio.Transport, deque[bytes]] | None:
    """The asyncio (or uvloop) transport and the bytes received not yet read of
    `stream`, when it is an open anyio asyncio `SocketStream` that has read no
    EOF and no error; else None."""
    if not _is_anyio_socket_stream(stream, ANYIO_ASYNCIO):
        return None
    transport: Any = getattr(stream, "_transport", None)  # uvloop's is no asyncio.Transport
    protocol = getattr(stream, "_protocol", None)
    read_queue = getattr(protocol, "read_queue", None)
    if (
        transport is None
        or not hasattr(transport, "set_protocol")
        or not isinstance(read_queue, deque)
        or transport.is_closing()
        or getattr(protocol, "exception", None) is not None
        or getattr(protocol, "is_at_eof", False)
        or getattr(stream, "_closed", True)
    ):
        return None
    return transport, read_queue


def is_open_trio_stream(stream: object) -> bool:
    """Whether `stream` is an open anyio trio `SocketStream`."""
    return _is_anyio_socket_stream(stream, ANYIO_TRIO) and getattr(stream, "_closed", True) is False


def set_read_size(transport: asyncio.BaseTransport, size: int) -> None:
    """Make an asyncio selector transport read at most `size` bytes at a time
    (uvloop's transports have no such setting: nothing happens)."""
    if hasattr(transport, "max_size"):
        transport.max_size = size


_enter_task = getattr(asyncio.tasks, "_enter_task", None)
_leave_task = getattr(asyncio.tasks, "_leave_task", None)


def as_task(task: asyncio.Task[Any], func: Callable[[_T], bool], arg: _T) -> bool | None:
    """`func(arg)` run by an event-loop callback as if `task` (parked at an
    await) were running it: `asyncio.current_task()`, and with it anyio's
    current task and cancel scopes, are `task`'s. None, without calling
    `func`, when asyncio lacks the means (or another task is current)."""
    if _enter_task is None or _leave_task is None:
        return None
    loop = task.get_loop()
    try:
        _enter_task(loop, task)
    except RuntimeError:  # a task is current: not called from a callback
        return None
    try:
        return func(arg)
    finally:
        _leave_task(loop, task)
