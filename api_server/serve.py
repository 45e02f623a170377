"""``ocr-api``: serve the API server with gunicorn, configured from the OCR_* settings."""

from __future__ import annotations

import json
import sys
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication

from ocr_common.db import check_database, make_engine
from ocr_common.settings import Settings, SettingsError, hash_api_key, load_settings

# Codes for the errors gunicorn answers itself, before the app sees the request.
_GUNICORN_ERROR_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "header_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error page (a request line or header over its limits, a malformed request)
    as the JSON every other answer of the API is."""
    body = json.dumps(
        {
            "error": {
                "code": _GUNICORN_ERROR_CODES.get(status_int, "http_error"),
                "message": mesg or reason,
            }
        }
    )
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, (head + body).encode("latin-1"))


class GunicornApp(BaseApplication):
    """gunicorn driven from our settings rather than its own command line."""

    def __init__(self, settings: Settings):
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        # Set in the master, so every forked worker writes its own errors as JSON too.
        gunicorn_util.write_error = write_json_error
        s = self._settings
        options: dict[str, Any] = {
            "bind": s.api_bind,
            "workers": s.api_processes,
            "threads": s.api_threads,
            "worker_class": "gthread",
            # Uploads are read in full before a job is stored; slow clients must not hang a
            # thread forever.
            "timeout": int(s.sync_timeout_s) + 30,
            "graceful_timeout": int(s.shutdown_grace_s),
            "keepalive": 5,
            "loglevel": s.log_level.lower(),
            "accesslog": None,
            "errorlog": "-",
            "proc_name": "ocr-api",
            # The control socket would be written under $HOME, which a container user may lack.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app

        return create_app(self._settings)


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
        check_database(make_engine(settings.database_url), settings)
    except SettingsError as exc:
        print(f"ocr-api: {exc}", file=sys.stderr)
        return 2
    sys.argv = sys.argv[:1]  # gunicorn must not read our arguments as its own
    GunicornApp(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
