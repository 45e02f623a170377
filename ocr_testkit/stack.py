"""The services of an end-to-end test, each a separate process: ocr-migrate, ocr-server, ocr-api.

Every process leads its own process group (so that engine processes and gunicorn workers can be
cleaned up with it) and logs to a file of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ocr_common.blobs import JobFiles, open_store
from ocr_testkit.waits import wait_until

BIN_DIR = Path(sys.executable).parent
CLIENT = Path(__file__).resolve().parents[1] / "test" / "client_test.py"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 90.0
# The stack running on each database, in this process. Two on one database share one queue:
# the OCR server of one claims jobs of the other, whose documents are in the other's blob store.
RUNNING: dict[str, Stack] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces: the fields after its closing parenthesis are fixed.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class Service:
    """One service process, leader of its own process group, logging to a file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path):
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        log_path = self.log_dir / f"{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            # The child keeps its own copy of the descriptor; ours closes at once.
            self.proc = subprocess.Popen(
                [str(BIN_DIR / self.name)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A process group of its own (to signal it with its engine processes or
                # gunicorn workers), but not a session of its own: with the kernel's
                # sched_autogroup, every session gets an equal CPU share, and the engines
                # would get one share between them however many cores they could use.
                process_group=0,
            )

    def wait_healthy(self, url: str) -> None:
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                return requests.get(f"{url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, START_TIMEOUT_S, f"{self.name} at {url}/healthz")

    def stop(self, sig: int = signal.SIGTERM, group: bool = False) -> int | None:
        """Signal the process (or its whole group), wait for it, then kill what is left."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.kill_group()
        return proc.returncode

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the process group (engine processes, gunicorn workers)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def log_text(self) -> str:
        parts = []
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)


@contextlib.contextmanager
def running_stack(database_url: str, log_dir: Path, **settings: str) -> Iterator[Stack]:
    """Both services on ``database_url`` (``settings``: OCR_* extra), for the ``with`` block."""
    stack = Stack(database_url, log_dir, **settings)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


class Stack:
    """The API server and the OCR server of one test module, on one database."""

    def __init__(self, database_url: str, log_dir: Path, **settings: str):
        api_port = free_port()
        # The kernel may hand out the port just released again: two services, two ports.
        server_port = next(port for port in iter(free_port, None) if port != api_port)
        self.database_url = database_url
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.server_url = f"http://127.0.0.1:{server_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCR_")}
        env.update(
            {
                "OCR_DATABASE_URL": database_url,
                "OCR_API_BIND": f"127.0.0.1:{api_port}",
                "OCR_SERVER_BIND": f"127.0.0.1:{server_port}",
                "OCR_SERVER_URL": self.server_url,
                "OCR_WORKERS": "2",
                "OCR_API_PROCESSES": "2",
                "OCR_POLL_INTERVAL_S": "0.2",
                "OCR_LEASE_S": "3",
                "OCR_SHUTDOWN_GRACE_S": "10",
                # Both services' documents, in a folder of this stack's own.
                "OCR_BLOB_URL": f"file:{log_dir / 'blobs'}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(settings)
        self.env = env
        self.migrate = Service("ocr-migrate", env, log_dir)
        self.ocr = Service("ocr-server", env, log_dir)
        self.api = Service("ocr-api", env, log_dir)

    def start(self) -> None:
        running = RUNNING.setdefault(self.database_url, self)
        assert running is self, "a stack already runs on this database: give this one its own"
        self.migrate.start()
        assert self.migrate.proc is not None
        assert self.migrate.proc.wait(START_TIMEOUT_S) == 0, self.migrate.log_text()
        self.start_ocr()
        self.api.start()
        self.api.wait_healthy(self.api_url)

    def start_ocr(self) -> None:
        self.ocr.start()
        self.ocr.wait_healthy(self.server_url)

    def stop(self) -> None:
        # The API first, so that it takes nothing more while the OCR server drains.
        for service in (self.api, self.ocr, self.migrate):
            service.stop(signal.SIGTERM)
        if RUNNING.get(self.database_url) is self:
            del RUNNING[self.database_url]

    def logs(self) -> str:
        return "\n".join(service.log_text() for service in (self.migrate, self.ocr, self.api))

    # -- helpers for the tests --------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.api_url + path

    @property
    def files(self) -> JobFiles:
        """The blob store both services keep documents in (an S3 one needs this process's
        AWS_* variables to point at it, as the services' do)."""
        return JobFiles(open_store(self.env["OCR_BLOB_URL"]))

    def submit(self, image_b64: str) -> str:
        response = requests.post(self.url("/image"), json={"image_data": image_b64}, timeout=30)
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        assert isinstance(task_id, str)
        return task_id

    def result(self, task_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
        """The text of a task, once it is done."""

        def done() -> str | None:
            response = requests.get(self.url("/image"), json={"task_id": task_id}, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()["task_id"]

        return str(wait_until(done, timeout_s, f"the text of task {task_id}", interval_s=0.2))
