"""A server cut off in the middle of a transaction must not strand jobs (issue 15).

A cut-off OCR server looks to the database like a client that went silent with a transaction
open: its row locks stay until the database drops the session. These tests hold such a
transaction open for real (a connection that never commits, or a process frozen with SIGSTOP
between its claim and its commit) and check that the jobs it locked are back in other workers'
hands within about one lease, and that its late write is refused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from ocr_common import job_store
from ocr_common.db import is_connection_error, make_engine, make_session_factory
from ocr_common.models import JobStatus
from ocr_testkit.database import claim_next, filed_document, finish

IMAGE = b"\x89PNG fake image bytes"
LEASE_S = 2.0
# How long past the lease a locked job may take to come back: the database's check of the
# silent session, a reaper round, the claim.
MARGIN_S = 8.0
# Long enough to show a job stranded: several leases.
STRANDED_FOR_S = 4 * LEASE_S


@pytest.fixture
def database_url(mysql_url: str) -> str:
    """``sessions`` on MySQL alone (SQLite's case is the last test, on ``sqlite_url``)."""
    return mysql_url


def queue_one(sessions: sessionmaker[Session], image: bytes = IMAGE) -> str:
    with sessions.begin() as session:
        return job_store.create_job(session, document=filed_document(image), max_attempts=3).id


def status_of(sessions: sessionmaker[Session], job_id: str) -> tuple[str, str | None]:
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None
    return job.status.value, job.worker_id


def ocr_server_engine(url: str, bounded: bool) -> Engine:
    """An engine as the OCR server makes it (bounded) or as it did before issue 15."""
    return make_engine(url, session_timeout_s=LEASE_S if bounded else None, poolclass=NullPool)


# (level, option) of the client socket: TCP_NODELAY, SO_KEEPALIVE, then the keepalive timings.
SOCKET_OPTIONS = [
    (socket.IPPROTO_TCP, socket.TCP_NODELAY),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
]
# The kernel's defaults of those timings: /proc/sys/net/ipv4/tcp_keepalive_*.
KERNEL_TIMINGS = ("time", "intvl", "probes")


def client_socket(conn: Connection) -> socket.socket:
    """A duplicate of this process's socket for ``conn``, found by the client address the
    database reports for the session (the driver gives its socket through no public means)."""
    host = conn.exec_driver_sql(
        "SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()"
    ).scalar_one()
    address, port = host.rsplit(":", 1)
    found = None
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
            if sock.family == socket.AF_INET and sock.getsockname() == (address, int(port)):
                found = sock
            else:
                sock.close()
    assert found is not None, f"no socket of this process at {host}"
    return found


def claim_until(sessions: sessionmaker[Session], worker_id: str, timeout_s: float) -> str | None:
    """What ``worker_id``'s claim loop and reaper get within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sessions.begin() as session:
            job_store.requeue_expired(session)
        with sessions.begin() as session:
            job = claim_next(session, worker_id=worker_id, lease_s=30)
        if job is not None:
            return job.id
        time.sleep(0.2)
    return None


# A cut-off OCR server in a claim transaction: it claims (SELECT ... FOR UPDATE SKIP LOCKED,
# then UPDATE) and freezes before its COMMIT; SIGCONT lets it try to commit.
FROZEN_CLAIM = textwrap.dedent(
    """
    import os, signal, sys
    from ocr_common.db import is_connection_error, make_engine, make_session_factory
    from ocr_testkit.database import claim_next
    engine = make_engine(sys.argv[1], session_timeout_s=float(sys.argv[2]) or None)
    session = make_session_factory(engine)()
    session.begin()
    job = claim_next(session, worker_id="cut-off", lease_s=float(sys.argv[2]) or 2)
    print("claimed", job and job.id, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    try:
        session.commit()
        print("committed", flush=True)
    except Exception as exc:
        print("commit failed:", type(exc).__name__, flush=True)
    """
)


def freeze_in_claim(url: str, bounded: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FROZEN_CLAIM, url, str(LEASE_S if bounded else 0)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("claimed "), line
    # Frozen: stopped by its own SIGSTOP, inside the transaction.
    deadline = time.monotonic() + 10
    while not _stopped(proc.pid):
        assert time.monotonic() < deadline, "the claiming process did not freeze"
        time.sleep(0.05)
    return proc


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def resume(proc: subprocess.Popen[str]) -> str:
    os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    return out


@pytest.mark.mysql
def test_a_frozen_claim_strands_its_job_while_the_session_lives(
    mysql_url: str, sessions: sessionmaker[Session]
) -> None:
    """Before issue 15: the session of a frozen claimer lives for wait_timeout (8 hours by
    default), and every other claimer passes over its locked job all that time."""
    job_id = queue_one(sessions)
    proc = freeze_in_claim(mysql_url, bounded=False)
    try:
        assert claim_until(sessions, "other", STRANDED_FOR_S) is None
        assert status_of(sessions, job_id) == ("queued", None)
    finally:
        proc.kill()
        proc.wait()
    # Its death closes the session: the job is free at once.
    assert claim_until(sessions, "other", MARGIN_S) == job_id


@pytest.mark.mysql
def test_a_frozen_claim_gives_its_job_up_within_a_lease_and_its_commit_is_refused(
    mysql_url: str, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_one(sessions)
    proc = freeze_in_claim(mysql_url, bounded=True)
    try:
        assert claim_until(sessions, "other", LEASE_S + MARGIN_S) == job_id
        with sessions.begin() as session:
            assert finish(session, job_id=job_id, worker_id="other", text="done")
        # The frozen server wakes up: its session is gone, so its claim never commits.
        assert "commit failed" in resume(proc)
    finally:
        proc.kill()
        proc.wait()
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None
    assert (job.status, job.worker_id, job.text, job.attempts) == (
        JobStatus.SUCCEEDED,
        "other",
        "done",
        1,
    )


def hold_finish(url: str, sessions: sessionmaker[Session], bounded: bool) -> Session:
    """A running job whose holder, the cut-off server, is between the statements of its
    finish: the result written, the COMMIT never sent (its connection just goes silent)."""
    job_id = queue_one(sessions)
    with sessions.begin() as session:
        claim_next(session, worker_id="cut-off", lease_s=LEASE_S)
    session = make_session_factory(ocr_server_engine(url, bounded))()
    session.begin()
    assert finish(session, job_id=job_id, worker_id="cut-off", text="late")
    session.info["job_id"] = job_id
    return session


@pytest.fixture
def held_sessions() -> Iterator[list[Session]]:
    held: list[Session] = []
    yield held
    for session in held:
        engine = session.get_bind()
        session.close()
        assert isinstance(engine, Engine)
        engine.dispose()


@pytest.mark.mysql
def test_the_reaper_skips_a_locked_expired_job_instead_of_waiting(
    mysql_url: str, sessions: sessionmaker[Session], held_sessions: list[Session]
) -> None:
    """The reaper never waits on a row lock (innodb_lock_wait_timeout is 50 s by default and
    its failure rolled back the whole round): it re-queues the jobs it can and comes back."""
    held = hold_finish(mysql_url, sessions, bounded=False)
    held_sessions.append(held)
    other = queue_one(sessions, IMAGE + b"2")
    with sessions.begin() as session:
        claim_next(session, worker_id="dead", lease_s=LEASE_S)
    time.sleep(LEASE_S + 0.5)
    started = time.monotonic()
    with sessions.begin() as session:
        requeued, failed = job_store.requeue_expired(session)
    assert time.monotonic() - started < 2.0
    assert (requeued, failed) == (1, 0)
    assert status_of(sessions, other) == ("queued", None)
    assert status_of(sessions, held.info["job_id"]) == ("running", "cut-off")


@pytest.mark.mysql
def test_a_cut_off_finish_is_rolled_back_within_a_lease_and_never_lands(
    mysql_url: str, sessions: sessionmaker[Session], held_sessions: list[Session]
) -> None:
    held = hold_finish(mysql_url, sessions, bounded=True)
    held_sessions.append(held)
    job_id = held.info["job_id"]
    assert claim_until(sessions, "other", LEASE_S + MARGIN_S) == job_id
    with sessions.begin() as session:
        assert finish(session, job_id=job_id, worker_id="other", text="right")
    # The cut-off server's connection comes back: the database dropped its session and rolled
    # its write back, and the retry of its finish is refused by the lease guard.
    with pytest.raises(DBAPIError):
        held.commit()
    held.rollback()
    with held.begin():
        assert not finish(held, job_id=job_id, worker_id="cut-off", text="late")
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None
    assert (job.status, job.worker_id, job.text) == (JobStatus.SUCCEEDED, "other", "right")


@pytest.mark.mysql
def test_the_ocr_server_session_carries_the_bounds(mysql_url: str) -> None:
    engine = ocr_server_engine(mysql_url, bounded=True)
    try:
        with engine.connect() as conn:
            values = conn.exec_driver_sql(
                "SELECT @@session.wait_timeout, @@session.net_read_timeout, "
                "@@session.net_write_timeout, @@session.innodb_lock_wait_timeout"
            ).one()
            with client_socket(conn) as sock:
                options = [sock.getsockopt(*option) for option in SOCKET_OPTIONS]
    finally:
        engine.dispose()
    assert tuple(int(v) for v in values) == (2, 2, 2, 5)
    # Keepalive on, first probe after half a lease, then 3 probes a sixth of a lease apart (at
    # least a second each): a silent database is found gone within about a lease. The
    # kernel's defaults would be two hours, 75 s and 9 probes.
    assert options == [1, 1, 1, 1, 3]


@pytest.mark.mysql
def test_an_unbounded_session_keeps_the_kernels_keepalive_timings(mysql_url: str) -> None:
    engine = ocr_server_engine(mysql_url, bounded=False)
    try:
        with engine.connect() as conn, client_socket(conn) as sock:
            options = [sock.getsockopt(*option) for option in SOCKET_OPTIONS]
    finally:
        engine.dispose()
    # PyMySQL's own socket: no delay, keepalive on, the timings left to the kernel.
    kernel = Path("/proc/sys/net/ipv4")
    defaults = [int((kernel / f"tcp_keepalive_{name}").read_text()) for name in KERNEL_TIMINGS]
    assert options == [1, 1, *defaults]


@pytest.mark.parametrize("bounded", [False, True])
def test_a_database_that_cannot_be_reached_is_reported_as_pymysql_does(bounded: bool) -> None:
    """The bounded engine opens its socket itself; a refused connection is still PyMySQL's
    error 2003, which the start-up wait and the dispatcher take for the database being down."""
    engine = ocr_server_engine("mysql+pymysql://ocr:ocr@127.0.0.1:1/ocr", bounded=bounded)
    with pytest.raises(OperationalError) as caught:
        engine.connect()
    assert is_connection_error(caught.value)
    assert caught.value.orig is not None and caught.value.orig.args[0] == 2003
    assert "Can't connect to MySQL server on '127.0.0.1'" in str(caught.value.orig)


def test_on_sqlite_a_claimer_that_dies_mid_transaction_frees_the_database_at_once(
    sqlite_url: str,
) -> None:
    """SQLite has no network between a server and its data: the write lock is a lock on a
    local file, which the kernel drops the moment its process dies, however it dies. (A
    process frozen inside a transaction stalls every writer, not one job, until it resumes or
    dies; the busy timeout bounds each wait.)"""
    sessions = make_session_factory(make_engine(sqlite_url))
    job_id = queue_one(sessions)
    proc = freeze_in_claim(sqlite_url, bounded=True)
    proc.kill()
    proc.wait()
    started = time.monotonic()
    assert claim_until(sessions, "other", MARGIN_S) == job_id
    assert time.monotonic() - started < 1.0
