"""The Redis plumbing, in one place: clients for every ``redis_url`` and the connections they use.

- ``client``: ``connect(url)`` for single node, Sentinel, Redis Cluster (``cluster``) and the
  embedded ``memory://`` store;
- ``autopipeline``: the services' commands auto-pipelined over one connection;
- ``subscriber``: the fan-out's pub/sub connection (``sharded``: its cluster form);
- ``upstream``: everything the two above rely on inside redis-py.

The domain services only take a client (``Redis``) and never look in here.
"""

from pairing.store.client import Redis, connect, is_cluster, is_memory_url, ping

__all__ = ["Redis", "connect", "is_cluster", "is_memory_url", "ping"]
