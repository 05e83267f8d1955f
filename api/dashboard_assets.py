"""The dashboard's browser scripts, served from this service instead of public CDNs.

Flask-MonitoringDashboard 5.1.0's base page loads AngularJS, d3 and sunburst-chart from
cdnjs, googleapis and unpkg: a self-hosted service may have no internet, and a content
security policy with third-party origins would let those hosts run code on the dashboard.
``make`` copies the same versions from the npm registry into ``api/static/vendor/``
(git-ignored); this module rewrites the four addresses in the dashboard's pages to them.
"""
from __future__ import annotations

from pathlib import Path

from flask import Flask, request

VENDOR = Path(__file__).resolve().parent / "static" / "vendor"
# CDN address in FMD 5.1.0's fmd_base.html -> the file `make` puts in api/static/vendor/
ASSETS = {
    "https://cdnjs.cloudflare.com/ajax/libs/angular.js/1.7.5/angular.js": "angular.min.js",
    "https://ajax.googleapis.com/ajax/libs/angularjs/1.7.5/angular-route.js": "angular-route.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/d3/4.12.0/d3.min.js": "d3.min.js",
    "https://unpkg.com/sunburst-chart": "sunburst-chart.min.js",
}
# AngularJS 1.7 evaluates expressions with Function() and FMD's pages carry inline scripts
# and styles, so the dashboard needs 'unsafe-inline'/'unsafe-eval' -- but only from itself.
DASHBOARD_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
                    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
                    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def serve_dashboard_assets_locally(app: Flask, prefix: str = "/dashboard") -> None:
    """Rewrite the dashboard pages' CDN scripts to local copies and set their policy."""
    missing = [name for name in ASSETS.values() if not (VENDOR / name).is_file()]
    if missing:
        app.logger.warning("dashboard scripts missing from %s (%s): run `make` to fetch them; the "
                           "dashboard's charts will not load", VENDOR, ", ".join(missing))

    @app.after_request
    def local_scripts(response):
        if not request.path.startswith(prefix):
            return response
        response.headers["Content-Security-Policy"] = DASHBOARD_POLICY
        if response.mimetype == "text/html" and not response.direct_passthrough:
            page = response.get_data(as_text=True)
            for address, name in ASSETS.items():
                page = page.replace(address, f"/static/vendor/{name}")
            response.set_data(page)
        return response
