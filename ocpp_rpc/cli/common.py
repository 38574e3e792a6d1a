"""What every command shares: exit statuses, usage errors, TLS options."""

from __future__ import annotations

import argparse
import ssl

EXIT_OK = 0
EXIT_CALL_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT_FAILED = 3
EXIT_INTERRUPTED = 130
#: stdout's reader went away (``| head``): 128 + SIGPIPE, what a shell
#: reports for a Unix tool that SIGPIPE ended.
EXIT_BROKEN_PIPE = 141

DEFAULT_PROTOCOLS = "ocpp2.0.1,ocpp1.6"
#: Read for --password when it is not given (keeps the secret out of `ps`).
PASSWORD_ENV = "OCPP_RPC_PASSWORD"


class UsageError(Exception):
    """Bad options found after parsing (a file that does not exist, bad JSON):
    printed as ``error: ...`` with exit status 2."""


def protocol_list(text: str) -> tuple[str, ...]:
    """``"ocpp2.0.1,ocpp1.6"`` -> ``("ocpp2.0.1", "ocpp1.6")``; empty -> none."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of a charge-point-side command (None for ws://)."""
    url: str = args.url
    if not url.startswith("wss://"):
        if args.ca or args.cert or args.insecure:
            raise UsageError("TLS options need a wss:// URL")
        return None
    context = ssl.create_default_context(cafile=args.ca)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    elif args.key:
        raise UsageError("--key needs --cert")
    return context
