"""Helpers shared by the tests and the benchmarks: redis-server and Redis Cluster processes,
gateways (in-process and as processes), clients and event steps, the freezing proxy, nginx,
the tmux terminal and the official JavaScript client."""
