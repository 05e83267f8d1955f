"""The HTTP layer: the app factory (api.app), one blueprint per area, the service's context
(api.context), content negotiation (api.negotiation) and the error handlers (api.errors).

This package file stays empty of code on purpose: importing one module of ``api`` (the
dashboard binding, say) must not build the whole service. ``from api import create_app``
still works, resolved on first use.
"""


def __getattr__(name: str):
    """``api.create_app``, imported from api.app when first asked for (PEP 562)."""
    if name == "create_app":
        from api.app import create_app

        return create_app
    raise AttributeError(f"module 'api' has no attribute {name!r}")
