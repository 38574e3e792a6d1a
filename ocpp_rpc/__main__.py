"""``python -m ocpp_rpc``: the same command line as ``ocpp-rpc`` (see `ocpp_rpc.cli`)."""

from __future__ import annotations

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
