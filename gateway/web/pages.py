"""``GET /`` (the browser terminal), ``GET /console`` (the operator console), their bundles
and the icon: files of the build, with cache headers, gzip and the security headers."""

from __future__ import annotations

from aiohttp import web

from gateway.web.assets import Asset, Assets
from gateway.web.headers import secure

#: Pages are revalidated on every load (a deploy changes which bundles they name); bundles
#: are named by their content hash and never change.
PAGE_CACHE = "no-cache"
BUNDLE_CACHE = "public, max-age=31536000, immutable"
ICON_CACHE = "public, max-age=86400"


def respond(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    """The asset, gzipped when the client takes gzip; 304 when the client has that form.
    The gzip form has its own ETag (``"...-gz"``): the two are different bytes."""
    gzipped = asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", "")
    etag = asset.etag[:-1] + '-gz"' if gzipped else asset.etag
    headers = {"Cache-Control": cache_control, "ETag": etag, "Vary": "Accept-Encoding"}
    secure(headers)
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    if gzipped:
        assert asset.gzipped is not None
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=asset.gzipped, headers=headers)
    return web.Response(body=asset.body, headers=headers)


def not_found() -> web.Response:
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    secure(headers)
    return web.Response(status=404, text="404: Not Found", headers=headers)


class Pages:
    def __init__(self, assets: Assets, *, console_enabled: bool) -> None:
        self.assets = assets
        self.console_enabled = console_enabled

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.terminal)
        router.add_get("/console", self.console)
        router.add_get("/assets/{name}", self.bundle)
        router.add_get("/favicon.svg", self.icon)
        router.add_get("/favicon.ico", self.icon)

    def _page(self, request: web.Request, name: str) -> web.Response:
        asset = self.assets.get(name)
        return not_found() if asset is None else respond(request, asset, PAGE_CACHE)

    async def terminal(self, request: web.Request) -> web.Response:
        return self._page(request, "index.html")

    async def console(self, request: web.Request) -> web.Response:
        if not self.console_enabled:
            return not_found()
        return self._page(request, "console.html")

    async def bundle(self, request: web.Request) -> web.Response:
        asset = self.assets.get("assets/" + request.match_info["name"])
        return not_found() if asset is None else respond(request, asset, BUNDLE_CACHE)

    async def icon(self, request: web.Request) -> web.Response:
        asset = self.assets.get("favicon.svg")
        return not_found() if asset is None else respond(request, asset, ICON_CACHE)
