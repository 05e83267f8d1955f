"""The production server: gunicorn, with the app (dlib's models, the active model) loaded
once in the master before it forks, so every worker shares those pages of memory."""
from __future__ import annotations

import gc
import logging
import sys

from gunicorn.app.base import BaseApplication

from api.app import create_app
from api.tls import certificate_files
from api.worker import BufferingWorker
from conf.config import Config, Paths

log = logging.getLogger(__name__)


def before_fork(server, worker) -> None:
    """Move everything the master built (dlib's models, the app, the active model) out of the
    garbage collector's reach: a worker then neither touches those objects' pages (they stay
    shared with the master) nor walks them at every collection and at exit, where that walk
    alone kept each worker busy for seconds after SIGTERM."""
    gc.freeze()


def after_fork(server, worker) -> None:
    """Give each worker its own database connections: a SQLite handle must not cross a fork."""
    database = sys.modules.get("flask_monitoringdashboard.database")  # importing it would create a database
    if database is not None:
        database.engine.dispose(close=False)


class Server(BaseApplication):
    """gunicorn configured from our Config instead of its command line."""

    def __init__(self, config: Config):
        self.service_config = config
        super().__init__()

    def load_config(self):
        """gunicorn's settings, from the server and security sections."""
        server = self.service_config.server
        threads, keepalive = server.threads, server.keepalive
        # gthread behind a front that reads each request whole before a thread takes it, so
        # slow or stalled clients hold no thread (api/worker.py)
        worker = BufferingWorker.configured(
            header_timeout=server.header_timeout, body_timeout=server.body_timeout, min_body_rate=server.min_body_rate,
            max_buffered=server.max_buffered, buffer_bytes=server.buffer_bytes,
            client_connections=server.client_connections, client_buffer_bytes=server.client_buffer_bytes,
            max_body=self.service_config.limits.max_content_length)
        settings = {
            "bind": f"{server.host}:{server.port}",
            "workers": server.workers,
            "threads": threads,
            "worker_class": worker,
            # Without keep-alive a worker takes a connection only while one of its threads is
            # free (and its front has room), so each request goes to a worker that can start it now. A keep-alive
            # connection stays with the worker that accepted it, busy or not: 4 such clients
            # on 2 CPU-bound workers split unevenly (1.25x to 1.9x one client's throughput).
            "keepalive": keepalive,
            "worker_connections": threads if keepalive == 0 else 1000,
            "timeout": server.timeout,
            "preload_app": True,
            "pre_fork": before_fork,
            "post_fork": after_fork,
            "accesslog": "-",
            "errorlog": "-",
        }
        security = self.service_config.security
        if security.tls:
            settings["certfile"], settings["keyfile"] = certificate_files(
                Paths(self.service_config.data_dir).tls, security)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        """The app, built once in the master before the workers fork."""
        return create_app(self.service_config)


def serve(config: Config) -> None:
    """Serve until stopped."""
    Server(config).run()
