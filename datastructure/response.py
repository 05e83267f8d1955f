"""The JSON envelope every answer uses, as in the original PyRecognizer.

    {"response": {"status": "OK"|"KO", "error": CODE|null, "description": str,
                  "data": ..., "date": "2019-11-23 18:23:01.762757"}}

One builder serves the REST layer, the CLI and the error handlers, so the shape cannot drift.
"""
from datetime import datetime

from datastructure.errors import PyRecognizerError


def envelope(data=None, *, description: str = "", error: str | None = None,
             status: str = "OK", **extra) -> dict:
    """Return the envelope; ``extra`` keys (e.g. ``faces``) sit beside ``data``."""
    body = {
        "status": status,
        "error": error,
        "description": description,
        "data": data,
        "date": str(datetime.now()),
    }
    body.update(extra)
    return {"response": body}


def error_envelope(exc: PyRecognizerError) -> dict:
    """Return the KO envelope for a typed error."""
    return envelope(exc.data, description=exc.description, error=exc.code, status="KO")
