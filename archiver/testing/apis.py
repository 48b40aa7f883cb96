"""FakeApis: every fake provider API and the result CDN, routed in one aiohttp app."""

from __future__ import annotations

from aiohttp import web

from archiver.testing.aggregators import AggregatorApis
from archiver.testing.hosted import HostedApis
from archiver.testing.kie import KieApis


class FakeApis(KieApis, AggregatorApis, HostedApis):
    """kie (Market and products), maxapi, acedata, apipod, Replicate and fal, plus /cdn/.

    Every API request is logged (`requests`) with its arrival time, the API it reached and
    the key it carried; `outage` and `throttle` inject trouble per API. `app()` serves it all;
    `cdn_app()` serves the result files alone, for a CDN on a port of its own.
    """

    def app(self) -> web.Application:
        app = self.cdn_app()
        self.kie_routes(app)
        self.aggregator_routes(app)
        self.hosted_routes(app)
        return app

    def cdn_app(self, app: web.Application | None = None) -> web.Application:
        """The result files at /cdn/{task_id}/{index}, added to `app` or a new app."""
        app = web.Application() if app is None else app
        app.router.add_get("/cdn/{task_id}/{index}", self.cdn)
        return app
