"""``ocpp-rpc simulate URL --chargers N``: load a CSMS with simulated charge
points and report latency and throughput per action."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import anyio

from .. import ConnectError, ConnectionClosed, RPCClient, RPCError
from .answers import answer_as_charge_point
from .call import error_fields
from .common import EXIT_BROKEN_PIPE, EXIT_CALL_FAILED, EXIT_OK, client_ssl_context
from .output import DIM, RED, Output
from .simulation import CallFunction, charger_store, run_session, transaction_call

#: Seconds between two refreshes of the live progress line.
PROGRESS_INTERVAL = 0.1


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list, rounded to the microsecond
    (None if empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


@dataclass
class Stats:
    """Latencies (ms) and errors per action, plus charger counts."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: dict[str, str] = field(default_factory=dict)
    connected: int = 0
    finished: int = 0
    failed: int = 0
    calls: int = 0

    def record_error(self, action: str, exc: BaseException) -> None:
        self.errors[action] += 1
        if action not in self.error_samples:
            fields = error_fields(exc)
            self.error_samples[action] = f"{fields['code']}: {fields['message']}"

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def rows(self) -> list[dict[str, Any]]:
        """One row per action (connections first), then the total."""
        names = sorted(set(self.latencies) | set(self.errors),
                       key=lambda name: (name != "(connect)", name))
        rows = []
        for name in [*names, "total"]:
            if name == "total":
                values = sorted(v for key, vs in self.latencies.items() if key != "(connect)"
                                for v in vs)
                errors = sum(n for key, n in self.errors.items() if key != "(connect)")
            else:
                values = sorted(self.latencies.get(name, ()))
                errors = self.errors.get(name, 0)
            rows.append({
                "action": name, "calls": len(values) + errors, "errors": errors,
                "p50_ms": percentile(values, 0.50),
                "p99_ms": percentile(values, 0.99),
            })
        return rows


async def simulate_command(args: argparse.Namespace) -> int:
    """``ocpp-rpc simulate``."""
    out = Output(json_lines=args.json)
    ssl_context = client_ssl_context(args)
    endpoint = args.url.rstrip("/")
    stats = Stats()
    total = args.chargers

    def protocol_of(number: int) -> str:
        if args.protocol == "mixed":
            return "ocpp1.6" if number % 2 else "ocpp2.0.1"
        return str(args.protocol)

    def timed(client: RPCClient, durable: bool) -> CallFunction:
        send = transaction_call(client) if durable else client.call

        async def call(action: str, params: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await send(action, params)
            except (TimeoutError, ConnectionClosed) as exc:
                if not durable:
                    if isinstance(exc, TimeoutError):
                        stats.record_error(action, exc)
                    raise
                # With a store the charger rides out a CSMS restart: a message
                # that is not kept (a heartbeat, a status) is lost, as on a
                # real charge point, and the session goes on.
                stats.record_error(action, exc)
                return {}
            except RPCError as exc:
                stats.record_error(action, exc)
                raise
            stats.latencies[action].append((time.perf_counter() - started) * 1000)
            stats.calls += 1
            return result

        return call

    async def charger(number: int) -> None:
        if args.ramp > 0:
            await anyio.sleep(args.ramp * (number - 1) / total)
        identity = f"{args.prefix}{number:04d}"
        protocol = protocol_of(number)
        started = time.perf_counter()
        store = charger_store(args.store, identity)
        try:
            async with RPCClient(
                endpoint, identity, protocols=[protocol], password=args.password,
                ssl_context=ssl_context, call_timeout=args.timeout,
                reconnect=store is not None, ping_interval=None, store=store,
            ) as client:
                stats.latencies["(connect)"].append((time.perf_counter() - started) * 1000)
                stats.connected += 1
                client.handle(answer_as_charge_point)
                await run_session(
                    timed(client, store is not None), protocol, serial=identity,
                    heartbeats=args.heartbeats,
                    transactions=args.transactions, meter_values=args.meter_values,
                )
                stats.finished += 1
        except ConnectError as exc:
            stats.failed += 1
            stats.record_error("(connect)", exc)
        except (RPCError, TimeoutError, ConnectionClosed):
            stats.failed += 1  # the call's error is already counted

    started = time.perf_counter()
    live = out.is_tty and not out.json_lines
    out.emit("start", out.style(f"simulating {total} charger(s) against {endpoint}", DIM),
             url=endpoint, chargers=total, protocol=args.protocol)
    with out.until_reader_gone():
        async with anyio.create_task_group() as tasks:
            progress = anyio.CancelScope()
            if live:
                tasks.start_soon(_show_progress, out, stats, total, started, progress)
            async with anyio.create_task_group() as chargers:
                for number in range(1, total + 1):
                    chargers.start_soon(charger, number)
            progress.cancel()
    if out.reader_gone:
        return EXIT_BROKEN_PIPE
    elapsed = time.perf_counter() - started
    if live:
        out.write("\r\x1b[K", end="")
    _report(out, stats, total, elapsed)
    if out.reader_gone:
        return EXIT_BROKEN_PIPE
    return EXIT_CALL_FAILED if stats.error_count or stats.failed else EXIT_OK


async def _show_progress(out: Output, stats: Stats, total: int, started: float,
                         scope: anyio.CancelScope) -> None:
    with scope:
        while True:
            elapsed = time.perf_counter() - started
            rate = stats.calls / elapsed if elapsed > 0 else 0.0
            out.write(
                f"\r\x1b[K{stats.connected}/{total} connected  {stats.finished} done  "
                f"{stats.calls} calls  {stats.error_count} errors  {rate:.0f} calls/s", end="")
            await anyio.sleep(PROGRESS_INTERVAL)


def _report(out: Output, stats: Stats, total: int, elapsed: float) -> None:
    rows = stats.rows()
    throughput = stats.calls / elapsed if elapsed > 0 else 0.0
    summary = {
        "chargers": total, "connected": stats.connected, "finished": stats.finished,
        "failed": stats.failed, "calls": stats.calls, "errors": stats.error_count,
        "seconds": round(elapsed, 3), "calls_per_s": round(throughput, 1),
    }
    if out.json_lines:
        for row in rows:
            out.emit("action", "", **row)
        out.emit("summary", "", **summary, error_samples=stats.error_samples)
        return
    out.table(["action", "calls", "errors", "p50 ms", "p99 ms"],
              [[row["action"], row["calls"], row["errors"], row["p50_ms"], row["p99_ms"]]
               for row in rows])
    line = (f"{stats.finished}/{total} chargers finished, {stats.calls} calls in "
            f"{elapsed:.2f} s: {throughput:.0f} calls/s")
    out.write("")
    out.write(out.style(line, RED) if stats.failed or stats.error_count else line)
    for action, sample in sorted(stats.error_samples.items()):
        print(out.style(f"  {action}: {sample}", RED), file=sys.stderr)
