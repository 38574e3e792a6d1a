"""What CPython's cyclic collector costs per long-lived connection, by how many
tracked objects each keeps: a model of connection setup without any I/O.

    python benchmarks/gc_scale.py [--conns 10000] [--heap 37000] [--objects 55 37 20]

Opens `--conns` "connections" one after another, each keeping `--objects`
small linked objects alive (as a real connection keeps its client, tasks,
transport...), with a little short-lived garbage each, over a program heap of
`--heap` objects, under the interpreter's default thresholds. Prints the
collector's time per connection (from `gc.callbacks`) and its full passes.
Real connections cost more per object (bigger objects, more references, the
cache misses of a heap shared with the event loop), not differently.
"""

from __future__ import annotations

import argparse
import gc
import time


class Node:
    __slots__ = ("first", "next", "spare")

    def __init__(self, next: Node | None = None, first: Node | None = None) -> None:
        self.next, self.first, self.spare = next, first, None


def measure(objects: int, conns: int, heap: int) -> tuple[float, int]:
    """(collector µs per connection, full passes) for `conns` connections."""
    gc.collect()
    program = [Node() for _ in range(heap)]
    took = [0.0, 0.0]
    passes = [0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            took[1] = time.perf_counter()
        else:
            took[0] += time.perf_counter() - took[1]
            passes[0] += info["generation"] == 2

    gc.callbacks.append(callback)
    try:
        kept = []
        for _ in range(conns):
            first = last = Node()
            for _ in range(objects - 1):
                last = Node(last, first)
            kept.append(last)
            for _ in range(20):  # short-lived garbage (freed at once)
                Node(Node())
    finally:
        gc.callbacks.remove(callback)
    del kept, program
    return 1e6 * took[0] / conns, passes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--heap", type=int, default=37_000)
    parser.add_argument("--objects", type=int, nargs="+", default=[55, 45, 37, 30, 20, 12])
    args = parser.parse_args()
    print("| tracked objects per connection | collector µs per connection | full passes |")
    print("|---|---|---|")
    for objects in args.objects:
        us, passes = measure(objects, args.conns, args.heap)
        print(f"| {objects} | {us:.1f} | {passes} |")


if __name__ == "__main__":
    main()
