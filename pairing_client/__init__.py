"""A Python client for the pairing gateway: runners and apps, end-to-end encrypted by default.

    from pairing_client import App, AppConfig, Runner, RunnerConfig

``Runner`` registers, prints its code ``<nameplate>-<secret>`` and serves its apps (echo,
commands, or a shell per app); ``App`` pairs with such a code (or resumes a pairing) and sends
and receives. ``pairing_client.e2e`` is the protocol itself (docs/protocol.md, "End-to-end
encryption"), without I/O.
"""

from .app import App, AppConfig
from .runner import Runner, RunnerConfig

__all__ = ["App", "AppConfig", "Runner", "RunnerConfig"]
