"""`python -m ocpp_rpc demo`: a CSMS and charge points talking, traffic printed."""

from __future__ import annotations

import argparse
import functools

import anyio

from ._demo import run_demo


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m ocpp_rpc")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a demo CSMS and charge points on loopback")
    demo.add_argument("--chargers", type=int, default=2, help="how many charge points (2)")
    demo.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    if args.command == "demo":
        anyio.run(functools.partial(run_demo, chargers=args.chargers), backend=args.backend)


if __name__ == "__main__":
    main()
