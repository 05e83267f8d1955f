"""Rate limits (Flask-Limiter, in memory): per client address, each limit from the config.

In-memory counters are per worker process, so with N workers a client gets up to N times a
limit; set ``RATELIMIT_STORAGE_URI`` (e.g. redis://) to share them.
"""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse

from api.context import current_service

limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", headers_enabled=True)


def limit(name: str, **options):
    """Decorate a view with the limit ``security.rate_limits.<name>`` of the running app."""
    return limiter.limit(lambda: getattr(current_service().config.security.rate_limits, name), **options)


def _wrong_token_limit():
    return parse(current_service().config.security.rate_limits.wrong_token)


def wrong_token_allowed() -> bool:
    """Whether this client address may still try a token (under ``rate_limits.wrong_token``)."""
    return limiter.limiter.test(_wrong_token_limit(), "wrong_token", get_remote_address())


def wrong_token_seen() -> None:
    """Count a wrong API token against this client address."""
    limiter.limiter.hit(_wrong_token_limit(), "wrong_token", get_remote_address())
