"""The service of the running app: the one ``Service`` every blueprint works with.

``create_app`` installs it; blueprints look it up here (never in the package ``__init__``),
so this module knows nothing of routes and imports nothing else of ``api``.
"""
from __future__ import annotations

from flask import Flask, current_app

from utils.service import Service

EXTENSION = "pyrecognizer"


def install_service(app: Flask, service: Service) -> None:
    """Make ``service`` the one ``current_service()`` returns while ``app`` handles a request."""
    app.extensions[EXTENSION] = service


def current_service() -> Service:
    """Return the service of the app handling the current request."""
    return current_app.extensions[EXTENSION]
