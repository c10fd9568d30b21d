"""``make bench``: the gateway's benchmark harness (see ``python -m bench --help``).

Modules: ``client`` (a lean Socket.IO client), ``loadgen`` (the load generator process),
``bare_server`` (stock python-socketio, the ceiling), ``service`` (PairingSessionService
against redis-benchmark), ``procs`` (pinned processes, stopped by pid), ``scenarios`` (what
each scenario runs and measures), ``report`` (docs/benchmarks.md and the chart) and
``runner`` (the command line).
"""
