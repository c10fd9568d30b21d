"""The operations of every service on a Redis Cluster, as ordered single-slot steps.

On one Redis each service operation is one Lua script (or command) over every key it
touches. On a cluster those keys sit in different slots, on different masters, so no script
can hold them all: each operation runs as ordered steps, each a script or command on one
hash tag, in an order that keeps the stored state valid if a replica stops between any two
of them (docs/architecture.md, "Pairing on a Redis Cluster"; docs/round-trips.md counts the
steps).

A service chooses its backend once, at construction, from its key layout: the one-Redis
backend beside the service (``pairing.codes.OneRedisCodes``, ...) or the cluster backend
here (``pairing.cluster.codes.ClusterCodes``, ...), both behind the service's backend
protocol. ``pairing.cluster.pairing`` holds the steps that move an app between runners,
which sessions, codes, app pairing and runners share.
"""
