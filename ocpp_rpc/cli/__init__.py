"""The ``ocpp-rpc`` command line: ``demo``, ``serve``, ``call`` and ``simulate``."""

from .common import UsageError as UsageError
from .main import main as main

__all__ = ("UsageError", "main")
