"""JSON or a page: the one place that decides which one a client gets.

Every REST view answers with the JSON envelope and is written once. A browser navigating or
posting a plain form (it prefers HTML) gets a page instead: ``negotiate`` wraps the views that
have one (``api.pages.PAGES`` maps an endpoint to the function rendering its envelope as a
page), and ``api.errors`` asks ``wants_html`` before rendering an error.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping

from flask import Flask, make_response, render_template, request

PageRenderer = Callable[[dict], object]


def wants_html() -> bool:
    """True when the client prefers a page to JSON (a browser navigating)."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes[best] > request.accept_mimetypes["application/json"]


def render_page(template: str, status: int = 200, **context):
    """Return one of the pages (a template of api/templates) as a response nobody caches."""
    response = make_response(render_template(template, **context), status)
    response.headers["Cache-Control"] = "no-store"  # every page carries a CSRF token
    return response


def with_page(view: Callable, render: PageRenderer) -> Callable:
    """Return ``view`` answering a browser with ``render(envelope)`` instead of the envelope."""

    @functools.wraps(view)  # keeps the name that Flask-Limiter and the dashboard key on
    def negotiated(*args, **kwargs):
        answer = view(*args, **kwargs)
        if not wants_html():
            return answer
        return render(answer[0] if isinstance(answer, tuple) else answer)

    return negotiated


def negotiate(app: Flask, pages: Mapping[str, PageRenderer]) -> None:
    """Give every registered endpoint named in ``pages`` its page for browsers."""
    for endpoint, render in pages.items():
        app.view_functions[endpoint] = with_page(app.view_functions[endpoint], render)
