"""Terminal output of the command line: human lines (coloured only on a TTY
with ``NO_COLOR`` unset) or, with ``--json``, one JSON object per line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

import anyio

RESET = "\x1b[0m"
BOLD = "1"
DIM = "2"
RED = "31"
GREEN = "32"
YELLOW = "33"
BLUE = "34"
MAGENTA = "35"
CYAN = "36"

#: Colour of a frame by its OCPP-J message type.
_FRAME_COLOURS = {2: CYAN, 3: GREEN, 4: RED, 5: RED, 6: MAGENTA}


def wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def clock() -> str:
    """Local wall-clock time to the millisecond, for log-like lines."""
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def message_type(frame: str | bytes) -> int | None:
    """The OCPP-J message type of a raw frame, cheaply (None if unreadable)."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    head = text.lstrip()[:3]
    if len(head) >= 2 and head[0] == "[" and head[1].isdigit():
        return int(head[1])
    return None


class Output:
    """Where a command writes its results.

    `emit(kind, text, **fields)` prints `text` for people, or
    ``{"event": kind, **fields}`` as one JSON line with ``--json``. Every line
    is flushed at once, so that a pipe reader (a test, ``jq``) sees it live.

    When the reader goes away (``ocpp-rpc demo | head -3``), the stream is
    pointed at /dev/null, `reader_gone` turns true and `on_reader_gone` is
    called once: the command stops, with no BrokenPipeError traceback.
    """

    def __init__(
        self, stream: TextIO | None = None, *, json_lines: bool = False,
        colour: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.json_lines = json_lines
        self.colour = wants_colour(self.stream) if colour is None else colour
        self.reader_gone = False
        self.on_reader_gone: Callable[[], object] | None = None

    @property
    def is_tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def style(self, text: str, *codes: str) -> str:
        """`text` wrapped in ANSI SGR `codes` when colour is on."""
        if not self.colour or not codes:
            return text
        return f"\x1b[{';'.join(codes)}m{text}{RESET}"

    def write(self, line: str, end: str = "\n") -> None:
        """Print one raw line, in one write: the workers of ``serve --workers``
        share one stdout, and a line written in two parts (text, then newline)
        could be split by another worker's line. ``end=""`` leaves the line
        open (a progress line redrawn in place)."""
        try:
            self.stream.write(line + end)
            self.stream.flush()
        except BrokenPipeError:
            self._lost_reader()

    def _lost_reader(self) -> None:
        # As the Python docs advise (signal module, "Note on SIGPIPE"): not
        # SIG_DFL, which would also kill us on a socket a charger closed, but
        # /dev/null under the stream, so that what is still buffered, later
        # lines and the flush at exit go nowhere instead of raising again.
        try:
            fd: int | None = self.stream.fileno()
        except (OSError, ValueError, AttributeError):  # a stream with no file behind it
            fd = None
        if fd is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        if not self.reader_gone:
            self.reader_gone = True
            if self.on_reader_gone is not None:
                self.on_reader_gone()

    def until_reader_gone(self) -> anyio.CancelScope:
        """A cancel scope that is cancelled when the reader goes away (at once
        if it is gone already): what a command does in it stops then."""
        scope = anyio.CancelScope()
        self.on_reader_gone = scope.cancel
        if self.reader_gone:
            scope.cancel()
        return scope

    def emit(self, kind: str, text: str, /, **fields: Any) -> None:
        """One event: `text` for people, or a JSON object with `fields`."""
        if self.json_lines:
            self.write(json.dumps({"event": kind, **fields}, default=str, ensure_ascii=False))
        else:
            self.write(text)

    def frame(self, local: str, remote: str, outbound: bool, message: str | bytes,
              *, timestamp: bool = True) -> None:
        """One WebSocket frame between `local` and `remote`, raw as sent."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        if self.json_lines:
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = None
            fields: dict[str, Any] = {
                "time": datetime.now().astimezone().isoformat(timespec="milliseconds"),
                "local": local, "remote": remote, "direction": "out" if outbound else "in",
            }
            if isinstance(parsed, list):
                fields["frame"] = parsed
            else:
                fields["raw"] = text
            self.write(json.dumps({"event": "frame", **fields}, ensure_ascii=False))
            return
        arrow = "->" if outbound else "<-"
        colour = _FRAME_COLOURS.get(message_type(text) or 0)
        prefix = self.style(clock(), DIM) + " " if timestamp else ""
        head = f"{local} {arrow} {self.style(f'{remote:<4}', BOLD)}"
        body = self.style(text, colour) if colour else text
        self.write(f"{prefix}{head} {body}")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A plain text table, numbers right-aligned (human output only)."""
        cells = [[_cell(value) for value in row] for row in rows]
        widths = [
            max(len(headers[i]), *(len(row[i]) for row in cells)) if cells else len(headers[i])
            for i in range(len(headers))
        ]
        numeric = [
            bool(rows) and all(isinstance(row[i], int | float | None) for row in rows)
            for i in range(len(headers))
        ]

        def line(values: Sequence[str]) -> str:
            return "  ".join(
                value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i])
                for i, value in enumerate(values)
            ).rstrip()

        self.write(self.style(line(headers), BOLD))
        for row in cells:
            self.write(line(row))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value < 1000 else f"{value:.0f}"
    return str(value)


def pretty_json(value: Any, *, indent: bool) -> str:
    """`value` as JSON, indented for people when `indent`."""
    return json.dumps(value, indent=2 if indent else None, ensure_ascii=False, default=str)
