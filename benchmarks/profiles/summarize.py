"""Self time of a py-spy ``--format raw`` profile (collapsed stacks), by leaf
function and by group; prints a markdown-ish text summary.

    python benchmarks/profiles/summarize.py PROFILE.txt [--cpu-us US] [--split USER SYS] [--top 12]

``--cpu-us``: the server's CPU µs per call measured in the profiled run, to
turn shares into µs per call (else percentages). py-spy samples wall time: a
thread preempted right after a ``send`` that woke its peer is charged to that
line, so the syscall share is inflated on a busy machine; ``--split USER SYS``
(utime and stime µs/call from /proc) gives the syscall group the kernel time
and shares the user time among the others.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

#: Leaf functions whose self time is a socket or epoll system call: py-spy
#: (without --native) charges a C call to the Python line that makes it, and in
#: these the line is ``sock.send``/``sock.recv``/``epoll.poll``.
SYSCALLS = re.compile(
    r"^(_SelectorSocketTransport\.(write|_read_ready__data_received|_write_send)|"
    r"TrioSocketStream\._(send|receive)|EpollSelector\.select|"
    r"EpollIOManager\.(get_events|_epoll_wait|_update_registrations)|"
    r"BaseSelectorEventLoop\._(add|remove)_(reader|writer)|socket\.\w+) ")
#: (group, pattern on "function (path)") after SYSCALLS; the first match wins.
GROUPS = [
    ("JSON", r"\(json/|orjson|_wire/codec\.py"),
    ("task wake-ups/scheduling", r"^AsyncioSocketStream\._parked |"
                                 r"asyncio/(events|base_events|tasks|futures|locks|queues|"
                                 r"mixins|selector_events)\.py|anyio/|trio/|"
                                 r"ocpp_rpc/_concurrency/|outcome/|sniffio/|contextvars|"
                                 r"WaitTaskRescheduled"),
    ("WebSocket framing", r"wsproto|ocpp_rpc/_transport/"),
    # isawaitable, isinstance on ABCs, logging checks: called by our dispatch per message
    ("our connection logic", r"ocpp_rpc/|__create_fn__|^isawaitable |__instancecheck__|"
                             r"Logger\.isEnabledFor"),
]
#: Samples outside the served steady state: imports at start, the stdin thread.
SKIP = re.compile(r"importlib\._bootstrap|\(threading\.py|futures/thread\.py")


def frame_key(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (path/to/file.py)``."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    return f"{match.group(1)} ({match.group(2)})" if match else frame


def group_of(key: str) -> str:
    if SYSCALLS.match(key):
        return "syscalls/selector"
    for name, pattern in GROUPS:
        if re.search(pattern, key):
            return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--cpu-us", type=float, help="measured server CPU µs per call")
    parser.add_argument("--split", nargs=2, type=float, metavar=("USER_US", "SYS_US"),
                        help="measured user and kernel CPU µs/call: the syscall group gets "
                             "the kernel time, the other groups share the user time")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    leaves: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        if line.startswith("#"):
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames or SKIP.search(stack):
            continue
        leaves[frame_key(frames[-1])] += int(count)
        total += int(count)
    scale = (args.cpu_us or 100.0) / total  # µs per call per sample (or % without --cpu-us)
    unit = "µs/call" if args.cpu_us else "%"
    print(f"{total} samples; self time by leaf function ({unit}):")
    for key, n in leaves.most_common(args.top):
        print(f"  {n * scale:6.1f}  [{group_of(key)}] {key}")
    groups: Counter[str] = Counter()
    for key, n in leaves.items():
        groups[group_of(key)] += n
    print(f"by group ({unit}):")
    for name, n in groups.most_common():
        print(f"  {n * scale:6.1f}  {name}")
    if args.split:
        user, kernel = args.split
        rest = total - groups["syscalls/selector"]
        print(f"by group, kernel time to syscalls, user time shared "
              f"(µs/call, {user + kernel:.1f}):")
        print(f"  {kernel:6.1f}  syscalls/selector (kernel time)")
        for name, n in groups.most_common():
            if name != "syscalls/selector":
                print(f"  {n * user / rest:6.1f}  {name}")


if __name__ == "__main__":
    main()
