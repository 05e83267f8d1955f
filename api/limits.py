"""Rate limits (Flask-Limiter): per client address, each limit from the config.

The counters live where ``security.rate_limit_storage`` (or ``RATELIMIT_STORAGE_URI``) says:
``memory://``, the default, counts in each worker process, so with N workers a client gets
up to N times a limit; a shared storage (e.g. ``redis://host:6379``) counts once for all.
"""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse

from api.context import current_service

# storage_uri is left to the app's RATELIMIT_STORAGE_URI, which create_app sets from the config
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)


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
