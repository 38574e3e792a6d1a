"""`Outbox`: the bounded queue of frames between senders and a connection's writer."""

from __future__ import annotations

from .._concurrency.events import EventLike, new_event


class OutboxClosed(Exception):
    """`Outbox.put` after `close` (or while waiting for room when it closed)."""


class Outbox:
    """Frames waiting for the writer, taken in batches.

    Unlike an anyio memory object stream, `put` does not yield while there is
    room (the sender of a call is about to wait for its answer anyway), and the
    writer takes every queued frame at once, so that one socket write carries
    all the frames that piled up while it was busy. Senders wait, in order,
    while `size` frames are queued: memory stays bounded when the peer reads
    slowly.
    """

    __slots__ = ("_closed", "_frames", "_room", "_size", "_wakeup")

    def __init__(self, size: int) -> None:
        self._size = size
        # None while empty: an idle connection holds no list (nor a deque, bigger still).
        self._frames: list[str | bytes] | None = None
        self._wakeup: EventLike | None = None  # the writer waits for a frame
        self._room: EventLike | None = None  # senders wait for room
        self._closed = False

    def __len__(self) -> int:
        frames = self._frames
        return 0 if frames is None else len(frames)

    @property
    def full(self) -> bool:
        """Whether `put` would wait."""
        frames = self._frames
        return frames is not None and len(frames) >= self._size

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, frame: str | bytes) -> None:
        """Queue `frame`; waits only while the outbox is full."""
        while True:
            if self._closed:
                raise OutboxClosed
            if not self.full:
                break
            if self._room is None:
                self._room = new_event()
            await self._room.wait()
        self._append(frame)
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def put_nowait(self, frame: str | bytes) -> None:
        """Queue `frame` now (call it when not `full`; OutboxClosed once closed)."""
        if self._closed:
            raise OutboxClosed
        self._append(frame)
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    async def take(self) -> list[str | bytes] | None:
        """Every queued frame (waits for one); None once closed and empty; an
        empty list if `interrupt` woke it."""
        while not self._frames:
            if self._closed:
                return None
            self._wakeup = new_event()
            await self._wakeup.wait()
            if not self._frames and not self._closed:
                return []
        frames = self._frames
        assert frames is not None
        self._frames = None
        if self._room is not None:
            self._room.set()
            self._room = None
        return frames

    def _append(self, frame: str | bytes) -> None:
        frames = self._frames
        if frames is None:
            self._frames = [frame]
        else:
            frames.append(frame)

    def interrupt(self) -> None:
        """Make a waiting `take` return an empty list (its writer may retire)."""
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def close(self) -> None:
        """No more frames: `take` returns what is queued, then None; senders
        (also those waiting for room) get OutboxClosed."""
        self._closed = True
        for event in (self._wakeup, self._room):
            if event is not None:
                event.set()
        self._wakeup = self._room = None
