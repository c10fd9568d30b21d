"""The gateway's benchmarks.

Modules: ``official`` (``make bench``: the official socket.io-client under Node as load
generator, our gateway and optionally a second one of the same contract; writes
docs/benchmarks.md), ``cluster`` (``make bench-cluster``: Redis CPU per operation on one Redis
and on a Redis Cluster; its own section of that page) and ``hold_memory`` (Redis memory of a
held resume stream, for the page's hand-kept "Resume hold" figures). Their redis-server and
Redis Cluster processes are the tests' own (``tests.support``), stopped by pid.
"""
