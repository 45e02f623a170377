"""``ocr-api``: serve the API server with gunicorn, configured from the OCR_* settings."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from ocr_common.blobs import open_job_files
from ocr_common.db import check_database, make_engine
from ocr_common.observability import RequestIdFilter, configure_logging, formatter, say
from ocr_common.settings import (
    Settings,
    SettingsError,
    hash_api_key,
    load_settings,
    unknown_variables,
)

log = logging.getLogger(__name__)

# gunicorn's heartbeat: a worker's event loop that stops answering it this long is replaced.
# Requests run on the worker's threads, so a long /image-sync does not delay the heartbeat.
WORKER_TIMEOUT_S = 30


class GunicornLogger(glogging.Logger):
    """gunicorn's own lines (start, worker exits) in the format of ours (OCR_LOG_FORMAT)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        log_format = load_settings().log_format
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(log_format))
            handler.addFilter(RequestIdFilter())


class GunicornApp(BaseApplication):
    """gunicorn driven from our settings rather than its own command line.

    gunicorn runs the processes (OCR_API_PROCESSES; graceful stop within OCR_SHUTDOWN_GRACE_S);
    each is an asyncio worker that reads requests whole before one of its OCR_API_THREADS
    threads runs Flask on them (see http_front), so slow clients hold no thread.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        options: dict[str, Any] = {
            # A second address serves /metrics alone, when one is set (see access.py).
            "bind": [s.api_bind, *([s.metrics_bind] if s.metrics_bind else [])],
            "workers": s.api_processes,
            "worker_class": "api_server.http_front.ApiWorker",
            "timeout": WORKER_TIMEOUT_S,
            "graceful_timeout": int(s.shutdown_grace_s),
            "keepalive": 5,
            "loglevel": s.log_level.lower(),
            "accesslog": None,
            "errorlog": "-",
            "logger_class": "api_server.serve.GunicornLogger",
            "proc_name": "ocr-api",
            # The control socket would be written under $HOME, which a container user may lack.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app
        from .http_front import Front
        from .services import warm_up

        s = self._settings
        app = create_app(s)
        # In the worker (gunicorn loads the app after the fork), beside its first requests: a
        # database that takes connections but never answers must not hold the worker past
        # gunicorn's timeout, which counts while it loads.
        threading.Thread(
            target=warm_up, args=(app.extensions["ocr_services"],), name="warm-up", daemon=True
        ).start()
        return Front(app, max_body_bytes=s.max_request_bytes, threads=s.api_threads)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["hash-key"]:
        # The form OCR_API_KEYS stores a key in: the key itself is never configured.
        if len(args) != 2:
            print("usage: ocr-api hash-key KEY", file=sys.stderr)
            return 2
        print(hash_api_key(args[1]))
        return 0
    if args:
        print(
            "usage: ocr-api            serve the API server (settings from OCR_* variables)\n"
            "       ocr-api hash-key KEY  print the OCR_API_KEYS entry for KEY",
            file=sys.stderr,
        )
        return 2
    try:
        settings = load_settings()
        # First: the waits below log, in the format asked for (JSON lines for a collector).
        configure_logging(settings.log_level, settings.log_format)
        # Waits up to OCR_STARTUP_WAIT_S for a database that is down or still starting.
        engine = make_engine(settings.database_url)
        check_database(engine, settings)
        engine.dispose()
        # The store answers and takes blobs (waiting as for the database).
        open_job_files(settings.blob_url, settings.startup_wait_s)
    except SettingsError as exc:
        say("ocr-api", str(exc))
        return 2
    for unknown in unknown_variables(os.environ):
        log.warning(unknown)
    if (warning := exposure_warning(settings)) is not None:
        log.warning(warning)
    for variable, bind in (
        ("OCR_API_BIND", settings.api_bind),
        ("OCR_METRICS_BIND", settings.metrics_bind),
    ):
        if bind is not None and (reason := unbindable(bind)) is not None:
            # gunicorn would retry for 5 s, then say "Can't connect", naming no setting.
            say("ocr-api", f"cannot serve on {bind}: {reason}; set {variable} to a free HOST:PORT")
            return 1
    sys.argv = sys.argv[:1]  # gunicorn must not read our arguments as its own
    metrics_dir = _metrics_dir()
    master = os.getpid()
    try:
        GunicornApp(settings).run()
    finally:
        # gunicorn's workers are forks of this process and leave through here too: one that
        # exits (killed, or first on a stop) must not take the others' metrics with it.
        if metrics_dir is not None and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def listens_on_loopback_only(bind: str) -> bool:
    """Whether HOST:PORT (OCR_API_BIND) takes connections from this machine only."""
    host = bind.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever interfaces it names


def exposure_warning(settings: Settings) -> str | None:
    """What to warn of at start: no API keys on an address other machines may reach."""
    if settings.api_keys is not None or listens_on_loopback_only(settings.api_bind):
        return None
    return (
        f"API keys are off (OCR_API_KEYS is unset) and the API listens on {settings.api_bind}, "
        "beyond loopback: anyone who reaches this port can submit documents and read every "
        "job's text. Set OCR_API_KEYS (`ocr-api hash-key KEY` prints an entry) unless a proxy in "
        "front checks who calls."
    )


def unbindable(bind: str) -> str | None:
    """Why HOST:PORT cannot be listened on now (taken, not an address of this machine), or None."""
    host, _, port = bind.rpartition(":")
    try:
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            probe.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _metrics_dir() -> str | None:
    """Where the workers' metrics go (a fresh directory, removed at exit), unless the operator
    chose one; set before any worker imports prometheus_client."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="ocr-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


if __name__ == "__main__":
    sys.exit(main())
