"""``/docs``: the interactive API documentation, Swagger UI over ``/openapi.json``.

Swagger UI's files come from the npm registry at install, like the dashboard's scripts
(``make`` copies swagger-ui-dist into ``api/static/vendor/swagger-ui/``, git-ignored), and are
served from here: never a CDN, so the page works offline and the content security policy
names no other origin. Its start-up script is a static file (``static/apidocs.js``): the
policy allows no inline script. A user presses *Authorize*, pastes the API token (the spec's
bearer scheme) and tries any request from the page; the page's CSRF token rides along on
requests that change something, as the other pages' scripts send it.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app

from api.negotiation import render_page

SWAGGER_UI = Path(__file__).resolve().parent / "static" / "vendor" / "swagger-ui"
FILES = ("swagger-ui-bundle.js", "swagger-ui.css")

blueprint = Blueprint("apidocs", __name__, template_folder="templates")


def missing_files() -> list[str]:
    """Swagger UI's files that `make` has not fetched (none once it has)."""
    return [name for name in FILES if not (SWAGGER_UI / name).is_file()]


@blueprint.get("/docs")
def api_docs():
    """The Swagger UI page over /openapi.json (a hint to run `make` when its files are missing)."""
    missing = missing_files()
    if missing:
        current_app.logger.warning("Swagger UI missing from %s (%s): run `make` to fetch it", SWAGGER_UI,
                                   ", ".join(missing))
    return render_page("apidocs.html", missing=missing)
