"""The ``ocpp-rpc`` command line (also ``python -m ocpp_rpc``).

Commands::

    ocpp-rpc demo                      a CSMS and simulated charge points, traffic shown
    ocpp-rpc serve [--port 9000]       a development CSMS; call chargers from stdin
                  [--workers N --redis URL]  N processes on one port, one CSMS
    ocpp-rpc call URL ACTION [JSON]    one call as a charge point (or --file calls.jsonl)
    ocpp-rpc simulate URL --chargers N load a CSMS with N simulated charge points

Every command takes ``--backend asyncio|trio``, ``--json`` (one JSON object
per line on stdout) and ``-v`` (the library's DEBUG log on stderr, one line
per frame). Exit status: 0 success, 1 a call failed (CALLERROR, timeout,
closed connection), 2 bad usage or options, 3 could not connect, 130
interrupted, 141 stdout's reader went away (``| head``).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from .. import __version__
from .common import (
    DEFAULT_PROTOCOLS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PASSWORD_ENV,
    UsageError,
    protocol_list,
)

#: Read for ``serve --redis`` when it is not given (the URL may hold a password).
REDIS_ENV = "OCPP_RPC_REDIS_URL"


def setup_logging(verbose: int) -> None:
    """Library log records on stderr: WARNING and up, everything with ``-v``
    (then every frame in and out, with the charge point's identity)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    library = logging.getLogger("ocpp_rpc")
    library.addHandler(handler)
    library.setLevel(logging.DEBUG if verbose else logging.WARNING)
    library.propagate = False


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio",
                        help="the async library to run on (default: asyncio)")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output: one JSON object per line")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log the library at DEBUG on stderr (every frame)")


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password", default=os.environ.get(PASSWORD_ENV),
                        help="HTTP Basic auth password, user = the identity "
                        f"(default: ${PASSWORD_ENV})")
    parser.add_argument("--ca", metavar="FILE", help="CA bundle to verify a wss:// server")
    parser.add_argument("--cert", metavar="FILE", help="client certificate (security profile 3)")
    parser.add_argument("--key", metavar="FILE", help="the client certificate's private key")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the wss:// server's certificate")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="call timeout (default: 30)")


STORE_HELP = ("keep each charger's transaction messages in DIR/IDENTITY.db (durable calls): "
              "chargers boot offline, reconnect and deliver them once the CSMS is back")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="ocpp-rpc",
        description="OCPP-J RPC over WebSockets: a demo, a development CSMS, "
        "one-off calls and a load simulator.",
        epilog="Exit status: 0 ok, 1 a call failed, 2 usage, 3 could not connect, "
        "130 interrupted, 141 stdout's reader went away.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="a CSMS and simulated charge points in one process, traffic shown",
        description="Start a CSMS on loopback, connect charge points (odd: OCPP 1.6, "
        "even: 2.0.1), run boot, status, heartbeat and a transaction each, let the "
        "CSMS call every charger, and print every frame.")
    demo.add_argument("--chargers", type=int, default=2, help="how many charge points (2)")
    demo.add_argument("--store", metavar="DIR", help=STORE_HELP)
    _common(demo)

    serve = commands.add_parser(
        "serve", help="a development CSMS that answers the common actions",
        description="A development CSMS: accepts charge points, answers the common 1.6 and "
        "2.0.1 actions with valid defaults and prints every frame. Type "
        "'IDENTITY ACTION [JSON]' on stdin to call a connected charger ('help' for more); "
        "end of input (Ctrl-D) or SIGTERM stops it.")
    serve.add_argument("--port", type=int, default=9000,
                       help="TCP port (default: 9000; 0: any free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--protocols", type=protocol_list, default=protocol_list(DEFAULT_PROTOCOLS),
                       help=f"accepted subprotocols, preferred first ({DEFAULT_PROTOCOLS})")
    serve.add_argument("--password", default=os.environ.get(PASSWORD_ENV),
                       help="require this HTTP Basic auth password from every charge point "
                       f"(default: ${PASSWORD_ENV})")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve wss:// with this certificate")
    serve.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    serve.add_argument("--tls-client-ca", metavar="FILE",
                       help="require client certificates signed by this CA (profile 3)")
    serve.add_argument("--strict", action="store_true",
                       help="validate every payload against the OCA JSON schemas")
    serve.add_argument("--handlers", action="append", default=[], metavar="MODULE",
                       help="import handlers from a module name or .py file (repeatable)")
    serve.add_argument("--heartbeat-interval", type=int, default=300, metavar="SECONDS",
                       help="interval sent in BootNotification answers (300)")
    serve.add_argument("--no-stdin", action="store_true",
                       help="do not read commands from stdin (run until SIGTERM/Ctrl-C)")
    serve.add_argument("--quiet", action="store_true",
                       help="do not print frames, only connections and results")
    cluster = serve.add_argument_group(
        "cluster", "several processes (and machines) as one CSMS, through Redis or Valkey "
        "(pip install 'ocpp-rpc[redis]')")
    cluster.add_argument("--redis", metavar="URL", default=os.environ.get(REDIS_ENV) or None,
                         help="be a node of the cluster on this Redis: redis://[:PASSWORD@]"
                         f"HOST:PORT/DB or rediss:// (default: ${REDIS_ENV})")
    cluster.add_argument("--workers", type=int, default=1, metavar="N",
                         help="run N worker processes, each a cluster node, all listening "
                         "on the same port (SO_REUSEPORT); needs --redis (default: 1)")
    cluster.add_argument("--redis-prefix", default="ocpp", metavar="PREFIX",
                         help="prefix of every Redis key and channel: several CSMS can "
                         "share one Redis (default: ocpp)")
    cluster.add_argument("--lease", type=float, default=10.0, metavar="SECONDS",
                         help="a node that cannot renew its lease in Redis for this long "
                         "counts as gone (default: 10)")
    serve.add_argument("--worker-of", help=argparse.SUPPRESS)  # internal: see cli/workers.py
    _common(serve)

    call = commands.add_parser(
        "call", help="act as a charge point for one call (or a file of calls)",
        description="Connect as a charge point and make one call, printing its result. "
        "The identity is the URL's last path segment (or --identity).")
    call.add_argument("url", help="ws://host:port/path/IDENTITY (or wss://)")
    call.add_argument("action", nargs="?", help="the OCPP action, e.g. BootNotification")
    call.add_argument("params", nargs="?", default=None,
                      help="the payload as JSON (default: {})")
    call.add_argument("--file", metavar="FILE",
                      help="JSON lines of calls instead: [\"Action\", {...}] or "
                      "{\"action\": ..., \"params\": ...}; '-' reads stdin")
    call.add_argument("--identity", help="connect as IDENTITY to the URL as endpoint")
    call.add_argument("--protocols", type=protocol_list, default=protocol_list(DEFAULT_PROTOCOLS),
                      help=f"offered subprotocols, preferred first ({DEFAULT_PROTOCOLS})")
    call.add_argument("--strict", action="store_true",
                      help="validate payloads against the OCA JSON schemas")
    call.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                      help="stay connected this long after the calls, answering the "
                      "CSMS's calls like a simulated charger")
    _client_options(call)
    _common(call)

    simulate = commands.add_parser(
        "simulate", help="N simulated charge points against a CSMS, with a latency table",
        description="Connect N simulated charge points to a CSMS; each boots, reports "
        "status, sends heartbeats and runs transactions with meter values. Prints live "
        "progress on a terminal and a final table of calls, errors, p50/p99 latency "
        "and throughput.")
    simulate.add_argument("url", help="the CSMS endpoint, e.g. ws://127.0.0.1:9000/ocpp")
    simulate.add_argument("--chargers", type=int, default=10, help="how many (10)")
    simulate.add_argument("--protocol", choices=["ocpp1.6", "ocpp2.0.1", "mixed"],
                          default="ocpp1.6", help="the chargers' OCPP version (ocpp1.6)")
    simulate.add_argument("--prefix", default="SIM", help="identities are PREFIX0001... (SIM)")
    simulate.add_argument("--transactions", type=int, default=1, help="per charger (1)")
    simulate.add_argument("--meter-values", type=int, default=2,
                          help="meter readings per transaction (2)")
    simulate.add_argument("--heartbeats", type=int, default=1, help="per charger (1)")
    simulate.add_argument("--ramp", type=float, default=0.0, metavar="SECONDS",
                          help="spread the connections over this time (0: all at once)")
    simulate.add_argument("--store", metavar="DIR", help=STORE_HELP)
    _client_options(simulate)
    _common(simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "chargers", 1) < 1:
        parser.error("--chargers must be at least 1")
    if args.command == "serve":
        _check_serve(parser, args)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for --workers' workers
    setup_logging(args.verbose)
    try:
        runner = _command(args)
        if args.backend == "trio" and importlib.util.find_spec("trio") is None:
            raise UsageError("--backend trio needs Trio: pip install 'ocpp-rpc[trio]'")
        return anyio.run(runner, args, backend=args.backend)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _check_serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and not args.redis:
        parser.error(f"--workers {args.workers} needs --redis URL: the workers are one CSMS "
                     "through Redis (or Valkey), e.g. --redis redis://127.0.0.1:6379/0")
    if args.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        parser.error("--workers needs SO_REUSEPORT (Linux): run one serve --redis per port")
    if not args.lease > 0:
        parser.error("--lease must be a positive number of seconds")


def _command(args: argparse.Namespace) -> Callable[[argparse.Namespace], Awaitable[int]]:
    name = args.command
    if name == "serve" and args.workers > 1 and args.worker_of is None:
        from .workers import serve_workers

        return serve_workers
    if name == "demo":
        from .demo import demo_command

        return demo_command
    if name == "serve":
        from .serve import serve_command

        return serve_command
    if name == "call":
        from .call import call_command

        return call_command
    from .simulate import simulate_command

    return simulate_command


if __name__ == "__main__":
    sys.exit(main())
