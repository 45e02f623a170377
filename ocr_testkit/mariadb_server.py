"""A private MariaDB server for tests that stop or break the database.

Its own data directory, port and socket: stopping it never touches the shared server that other
tests and programs use. Started with ``mariadb-install-db`` + ``mariadbd``, small buffers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pymysql

from ocr_testkit.stack import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
USER = "ocr"
PASSWORD = "ocr"


class MariaDBUnavailable(RuntimeError):
    """The MariaDB binaries are missing or the server would not start here."""


class PrivateMariaDB:
    """One mariadbd process on a data directory of its own; stop and start it at will."""

    def __init__(self, base_dir: Path, extra_args: tuple[str, ...] = ()):
        self.base_dir = base_dir
        # More mariadbd options, e.g. ("--character-set-server=latin1",).
        self.extra_args = extra_args
        self.datadir = base_dir / "data"
        self.socket = base_dir / "mysqld.sock"
        self.pid_file = base_dir / "mysqld.pid"
        self.log_path = base_dir / "mariadbd.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def install(self) -> None:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if install is None or self._mariadbd() is None:
            raise MariaDBUnavailable("mariadb-install-db / mariadbd are not installed")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                *self._user_args(),
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise MariaDBUnavailable(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        """Start mariadbd (again: same data directory, same port) and wait until it answers."""
        assert self.proc is None or self.proc.poll() is not None, "mariadbd is running"
        mariadbd = self._mariadbd()
        assert mariadbd is not None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    mariadbd,
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--socket={self.socket}",
                    f"--pid-file={self.pid_file}",
                    *self._user_args(),
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-log-file-size=32M",
                    # The commit is the promise to the client; keep it durable as in production.
                    "--innodb-flush-log-at-trx-commit=1",
                    "--max-allowed-packet=64M",
                    "--max-connections=300",
                    "--skip-log-bin",
                    "--skip-name-resolve",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None:
                raise MariaDBUnavailable(
                    f"mariadbd exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise MariaDBUnavailable(f"mariadbd did not answer within {START_TIMEOUT_S:g} s")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop mariadbd with ``sig`` (SIGTERM: a clean shutdown) and wait for it to exit."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- databases -------------------------------------------------------------------------

    def create_database(self, prefix: str = "ocr_fault", charset: str | None = "utf8mb4") -> str:
        """A new empty database on this server; returns its SQLAlchemy URL. ``charset=None``
        leaves the server's default."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            suffix = f" CHARACTER SET {charset}" if charset else ""
            cur.execute(f"CREATE DATABASE `{name}`{suffix}")
        return f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _mariadbd() -> str | None:
        return (
            shutil.which("mariadbd")
            or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
            or shutil.which("mysqld", path="/usr/sbin:/usr/local/sbin")
        )

    @staticmethod
    def _user_args() -> list[str]:
        # mariadbd refuses to run as root unless told to; as anyone else it runs as itself.
        return ["--user=root"] if os.geteuid() == 0 else []

    def connect(
        self, database: str | None = None, user: str = USER, password: str = PASSWORD
    ) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            database=database,
            connect_timeout=2,
        )

    def _answers(self) -> bool:
        try:
            conn = self.connect(user="root", password="")
        except pymysql.err.OperationalError as exc:
            # Access denied means up (and root locked by someone); anything else: not yet.
            return bool(exc.args) and exc.args[0] == 1045
        with contextlib.closing(conn), conn.cursor() as cur:
            # First start only: the application's user, as production has one.
            cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'")
            cur.execute(f"GRANT ALL ON *.* TO '{USER}'@'%'")
        return True
