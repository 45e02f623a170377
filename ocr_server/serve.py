"""``ocr-server``: run the OCR server (dispatcher, engine pool, internal API) in the foreground;
SIGTERM or Ctrl-C stops it gracefully (OCR_SHUTDOWN_GRACE_S), a second signal at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from aiohttp import web, web_response

from ocr_common.blobs import JobFiles, open_job_files
from ocr_common.db import check_database, make_engine, make_session_factory, safe_url
from ocr_common.errors import OcrError
from ocr_common.observability import configure_logging, say
from ocr_common.settings import MIB, Settings, SettingsError, load_settings, unknown_variables

from .app import create_app
from .dispatcher import Dispatcher
from .engine import models_folder, probe
from .pool import EnginePool
from .webhooks import WebhookSender

log = logging.getLogger("ocr_server")
# The Server header of every answer, aiohttp's own error pages included (aiohttp's default
# names the Python and aiohttp versions, and it has no setting for it).
SERVER_HEADER = "ocr-server"
# After the grace, how long idle engines get to exit before they are killed.
ENGINE_STOP_WAIT_S = 1.0


async def serve(
    settings: Settings, pool: EnginePool, files: JobFiles, max_write_bytes: int | None
) -> None:
    # The lease bounds how long the database keeps our locks if we vanish mid-transaction.
    engine = make_engine(settings.database_url, session_timeout_s=settings.lease_s)
    sessions = make_session_factory(engine)
    dispatcher = Dispatcher(sessions, pool, settings, files, max_write_bytes=max_write_bytes)
    webhooks = WebhookSender(sessions, settings, dispatcher.counters)
    app = create_app(settings, sessions, pool, dispatcher)
    web_response.SERVER_SOFTWARE = SERVER_HEADER
    # handler_cancellation: a caller that hangs up cancels its handler, so that a synchronous
    # read no one waits for any more stops (see app.ocr).
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True)
    await runner.setup()
    host, _, port = settings.server_bind.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True)
    await site.start()
    dispatcher.start()
    webhooks.start()
    log.info(
        "OCR server %s on %s with %d engine(s), database %s",
        dispatcher.worker_id,
        settings.server_bind,
        pool.size,
        safe_url(settings.database_url),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: stopping now")
            pool.close(wait_s=0)
            sys.exit(1)
        log.info("signal %d: stopping; running jobs get %.0f s", signum, settings.shutdown_grace_s)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()
    # Stop taking requests first, then drain: nothing new arrives while we finish.
    await site.stop()
    grace_s = settings.shutdown_grace_s
    await asyncio.gather(dispatcher.stop(grace_s), webhooks.stop(grace_s))
    await runner.cleanup()
    engine.dispose()
    log.info("OCR server stopped")


def main() -> int:
    # Holds what lives as long as the server: the folder of models (OCR_TESSDATA_DIR).
    with contextlib.ExitStack() as lifetime:
        return run(lifetime)


def run(lifetime: contextlib.ExitStack) -> int:
    try:
        settings = load_settings()
        # Until the server's own handlers are installed, a stop request just exits cleanly.
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
        configure_logging(settings.log_level, settings.log_format)
        for warning in unknown_variables(os.environ):
            log.warning(warning)
        # Waits up to OCR_STARTUP_WAIT_S for a database that is down or still starting; the
        # packet size it reads bounds the results the dispatcher writes.
        engine = make_engine(settings.database_url)
        max_write_bytes = check_database(engine, settings)
        engine.dispose()
        files = open_job_files(settings.blob_url, settings.startup_wait_s)
        data_dir = lifetime.enter_context(models_folder(settings.tessdata_dir))
        info = probe(data_dir)
        pool = EnginePool.start(
            settings.workers,
            data_dir=data_dir,
            page_timeout_s=settings.page_timeout_s,
            max_pixels=settings.max_pixels,
            max_rss_bytes=settings.engine_max_rss_mb * MIB,
            render_timeout_s=settings.render_timeout_s,
            max_memory_bytes=settings.engine_max_memory_mb * MIB,
        )
    except (SettingsError, OcrError) as exc:
        say("ocr-server", str(exc))
        return 2
    log.info("%s, languages %s (models in %s)", info.version, "+".join(pool.languages), data_dir)
    try:
        asyncio.run(serve(settings, pool, files, max_write_bytes))
    except OSError as exc:
        say(
            "ocr-server",
            f"cannot serve on {settings.server_bind}: {exc}; set OCR_SERVER_BIND to a free "
            "HOST:PORT",
        )
        return 1
    finally:
        # The grace is over: engines still reading a page hold jobs already given back.
        pool.close(wait_s=ENGINE_STOP_WAIT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
