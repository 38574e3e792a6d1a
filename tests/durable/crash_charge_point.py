"""A charge point process for the crash tests (test_durable_crash.py): makes
durable calls ``Seq {"seq": n}`` for n from --start, printing ``stored n``
once each call is in the store, then (with --drain) waits until the store is
empty and prints ``drained``. The test SIGKILLs it at random moments.

    python crash_charge_point.py URL STORE --start N --count N [--drain] [--backend B]
"""

from __future__ import annotations

import argparse
import sys

import anyio

from ocpp_rpc import Backoff, RPCClient
from ocpp_rpc.durable import SQLiteStore


async def main(args: argparse.Namespace) -> None:
    store = SQLiteStore(args.store, interval=0.05)
    backoff = Backoff(initial=0.02, maximum=0.1, factor=2, jitter=0)
    with anyio.fail_after(args.max_seconds):
        async with RPCClient(args.url, "CP-CRASH", store=store, backoff=backoff,
                             ping_interval=None, call_timeout=2) as client:
            print("ready", flush=True)
            for seq in range(args.start, args.start + args.count):
                try:
                    await client.call("Seq", {"seq": seq}, durable=True, timeout=0)
                except TimeoutError:
                    pass  # stored: it goes out when it can
                print(f"stored {seq}", flush=True)
                await anyio.sleep(0.002)
            if args.drain:
                changed = anyio.Event()

                def delivered(event: object) -> None:
                    nonlocal changed
                    changed.set()
                    changed = anyio.Event()

                client.on("durable_result", delivered)
                while True:
                    seen = changed  # taken before looking: a result from now on sets it
                    if not await client.pending_durable():
                        break
                    await seen.wait()
                print("drained", flush=True)
            else:
                await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("store")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--max-seconds", type=float, default=30)
    arguments = parser.parse_args()
    anyio.run(main, arguments, backend=arguments.backend)
    sys.exit(0)
