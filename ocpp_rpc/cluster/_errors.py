"""The cluster's own exceptions."""

from __future__ import annotations

from ..errors import NotConnected as NotConnected

__all__ = ("ClusterUnavailable", "NotConnected")


class ClusterUnavailable(OSError):
    """Redis cannot be reached (or refused us): joining the cluster failed, or a
    call, lookup or registration could not go through Redis.

    A call that raises it was not retried; it was delivered only in the rare
    case where Redis failed at the very moment the call was being sent.
    """
