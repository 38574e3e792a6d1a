"""One CSMS on many processes and machines, on Redis (or Valkey).

``pip install "ocpp-rpc[redis]"``. Importing this module does not need the
Redis client; creating a `RedisCluster` does.

Public: `RedisCluster`, `ClusterEvent`, `ClusterEvents`, `ClusterUnavailable`,
`NotConnected`. For the server integration: `ClusterHost` (what a server
implements to be a node) and `Owner` (what `RedisCluster.register` returns).
See ``docs/cluster.md``.
"""

from ._cluster import ClusterEvents as ClusterEvents
from ._cluster import RedisCluster as RedisCluster
from ._errors import ClusterUnavailable as ClusterUnavailable
from ._errors import NotConnected as NotConnected
from ._presence import Owner as Owner
from ._protocol import ClusterEvent as ClusterEvent
from ._routing import ClusterHost as ClusterHost

__all__ = (
    "ClusterEvent",
    "ClusterEvents",
    "ClusterHost",
    "ClusterUnavailable",
    "NotConnected",
    "Owner",
    "RedisCluster",
)
