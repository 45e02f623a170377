"""The OCR servers' rows and a queued job's place, against real databases: SQLite and
MySQL/MariaDB."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store, server_store
from ocr_common.blobs import JobFiles
from ocr_common.models import JobStatus, OcrServerRow
from ocr_testkit.database import claim_next

STALE_S = 30.0


def beat(
    sessions: sessionmaker[Session],
    server_id: str,
    languages: tuple[str, ...] = ("eng",),
    engines: int = 2,
) -> None:
    with sessions.begin() as session:
        server_store.record_alive(
            session,
            server_id=server_id,
            host=f"host-of-{server_id}",
            engines=engines,
            languages=languages,
            started_at=job_store.utcnow(),
        )


def seen_ago(sessions: sessionmaker[Session], server_id: str, seconds: float) -> None:
    """Pretend ``server_id`` was last seen ``seconds`` ago."""
    when = job_store.utcnow() - timedelta(seconds=seconds)
    with sessions.begin() as session:
        session.execute(
            update(OcrServerRow).where(OcrServerRow.id == server_id).values(last_seen_at=when)
        )


def fleet(sessions: sessionmaker[Session]) -> server_store.Fleet:
    with sessions() as session:
        return server_store.fleet(session, stale_s=STALE_S)


def test_no_server_ever_seen_is_a_stall_with_no_languages(
    sessions: sessionmaker[Session],
) -> None:
    now = fleet(sessions)
    assert now.alive == () and now.last is None
    assert now.languages() is None
    assert now.stalled() == "no OCR server has been seen yet; jobs will wait until one starts"


def test_a_beat_is_one_row_per_server_kept_fresh(sessions: sessionmaker[Session]) -> None:
    beat(sessions, "a", engines=2)
    seen_ago(sessions, "a", 20)
    first = fleet(sessions).alive[0]
    beat(sessions, "a", languages=("eng", "deu"), engines=4)
    beat(sessions, "b")
    now = fleet(sessions)
    assert sorted(server.id for server in now.alive) == ["a", "b"]
    again = next(server for server in now.alive if server.id == "a")
    # The same row: its start stays, what it says and when it was seen are new.
    assert again.started_at == first.started_at
    assert again.last_seen_at > first.last_seen_at
    assert (again.host, again.engines, again.languages) == ("host-of-a", 4, ("deu", "eng"))
    assert now.stalled() is None


def test_a_server_not_seen_for_the_stale_time_is_not_alive(
    sessions: sessionmaker[Session],
) -> None:
    beat(sessions, "a")
    seen_ago(sessions, "a", STALE_S + 15)
    now = fleet(sessions)
    assert now.alive == ()
    assert now.last is not None and now.last.id == "a"
    reason = now.stalled()
    assert reason is not None and reason.endswith("; jobs will wait")
    seconds = int(reason.split("for ")[1].split(" s")[0])
    assert STALE_S + 14 <= seconds <= STALE_S + 20, reason
    beat(sessions, "a")
    assert [server.id for server in fleet(sessions).alive] == ["a"]


def test_a_stopped_server_is_not_waited_for(sessions: sessionmaker[Session]) -> None:
    beat(sessions, "a")
    with sessions.begin() as session:
        server_store.record_stopped(session, server_id="a")
    now = fleet(sessions)
    assert now.alive == ()
    assert (
        now.stalled()
        == "no OCR server has been seen for 0 s (the last one stopped); jobs will wait"
    )
    # The same server id starting again (it never does: each process has its own) is alive.
    beat(sessions, "a")
    assert len(fleet(sessions).alive) == 1


def test_old_rows_are_forgotten(sessions: sessionmaker[Session]) -> None:
    for server_id, days in (("old", 3), ("older", 9), ("recent", 0)):
        beat(sessions, server_id)
        seen_ago(sessions, server_id, days * 86400)
    with sessions.begin() as session:
        cut_off = job_store.utcnow() - timedelta(days=1)
        assert server_store.forget_before(session, seen_before=cut_off) == 2
    now = fleet(sessions)
    assert [server.id for server in now.alive] == ["recent"]


def test_languages_are_those_every_live_server_reads(sessions: sessionmaker[Session]) -> None:
    beat(sessions, "a", languages=("eng", "deu", "fra"))
    beat(sessions, "b", languages=("eng", "deu"))
    assert fleet(sessions).languages() == ("deu", "eng")
    # A server gone stale no longer narrows them; with none alive, the last one seen says.
    seen_ago(sessions, "b", STALE_S + 1)
    assert fleet(sessions).languages() == ("deu", "eng", "fra")
    seen_ago(sessions, "a", STALE_S + 5)
    assert fleet(sessions).languages() == ("deu", "eng")


def test_a_queued_job_counts_the_jobs_claimed_before_it(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    with sessions.begin() as session:
        jobs = [
            job_store.create_job(session, document=files.store_document(b"x"), max_attempts=3)
            for _ in range(5)
        ]
    # Two jobs made at the same moment go by id, as claim_batch takes them.
    tie = jobs[2].created_at
    with sessions.begin() as session:
        session.execute(
            update(job_store.JOBS).where(job_store.JOBS.c.id == jobs[3].id).values(created_at=tie)
        )

    def ahead(index: int, up_to: int = job_store.MAX_COUNTED_AHEAD) -> int:
        with sessions() as session:
            job = job_store.get_job(session, jobs[index].id)
            assert job is not None and job.status == JobStatus.QUEUED
            return job_store.jobs_ahead(session, job, up_to=up_to)

    tied_first, tied_second = sorted((2, 3), key=lambda index: jobs[index].id)
    assert [ahead(0), ahead(1), ahead(4)] == [0, 1, 4]
    assert (ahead(tied_first), ahead(tied_second)) == (2, 3)
    assert ahead(4, up_to=2) == 2
    # A claimed job is not ahead any more: it is being read.
    with sessions.begin() as session:
        claimed = claim_next(session, worker_id="w", lease_s=30)
    assert claimed is not None and claimed.id == jobs[0].id
    assert ahead(4) == 3
