"""Security headers of every response the web routes make.

Scripts come from this origin only, as files (no inline script, no eval); styles may be
inline because xterm.js writes its renderer's rules into ``<style>`` elements. Nothing is
loaded from another origin, and no page may be framed. No Cross-Origin-Opener-Policy: the
pages are often opened over plain HTTP on a local network, where browsers ignore it and log
an error.
"""

from __future__ import annotations

from collections.abc import MutableMapping

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


def secure(headers: MutableMapping[str, str]) -> None:
    headers.update(SECURITY_HEADERS)
