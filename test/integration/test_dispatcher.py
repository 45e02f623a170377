"""The dispatcher on a real database, with small fake engines standing in for Tesseract."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store, server_store
from ocr_common.blobs import BlobStoreError, FileStore, JobFiles
from ocr_common.errors import EngineCrashed, EngineTimeout
from ocr_common.models import Job, JobOutcome, JobRow, JobStatus
from ocr_common.options import OcrOptions
from ocr_common.result import PackedPage
from ocr_common.settings import Settings, load_settings
from ocr_server.claims import AHEAD
from ocr_server.dispatcher import Dispatcher
from ocr_server.documents import Documents
from ocr_server.engine import PageTask
from ocr_server.metrics import DispatcherCounters
from ocr_server.outcomes import OutcomeWriter
from ocr_server.pool import EnginePool
from ocr_server.transactions import Transactions
from ocr_testkit.database import claim_next
from ocr_testkit.pages import packed_reading
from ocr_testkit.waits import wait_until, wait_until_async

POISON = b"poison"


class FakeEngine:
    """Echoes the image as text; crashes on POISON; crashes once on images starting with 'flaky';
    reads a page only once ``gate`` (if any) opens."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.delay_s = delay_s
        self.gate = gate
        self.seen: list[bytes] = []
        self.returned = 0  # pages whose recognize_page has returned or raised
        self.spans: list[tuple[float, float]] = []  # (began, ended) of each page, monotonic
        self._lock = threading.Lock()

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage:
        image = task.document
        began = time.monotonic()
        with self._lock:
            first_time = image not in self.seen
            self.seen.append(image)
        try:
            if self.gate:
                self.gate.wait(10)
            time.sleep(self.delay_s)
            if image == POISON:
                raise EngineCrashed("the engine crashed on this page")
            if image.startswith(b"flaky") and first_time:
                raise EngineTimeout("took too long")
            return packed_reading(task.page, image.decode() + "\n")
        finally:
            self.returned += 1
            self.spans.append((began, time.monotonic()))


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"lease_s": 3, "poll_interval_s": 0.05, "max_attempts": 3}
    values.update(overrides)
    return load_settings(**values)


def queue(
    sessions: sessionmaker[Session], files: JobFiles, images: list[bytes], max_attempts: int = 3
) -> list[str]:
    documents = [files.store_document(image) for image in images]
    with sessions.begin() as session:
        return [
            job_store.create_job(session, document=document, max_attempts=max_attempts).id
            for document in documents
        ]


def jobs(sessions: sessionmaker[Session], ids: list[str]) -> list[Job]:
    with sessions() as session:
        found = [job_store.get_job(session, job_id) for job_id in ids]
    assert all(job is not None for job in found)
    return [job for job in found if job is not None]


async def run_until_final(
    dispatcher: Dispatcher, sessions: sessionmaker[Session], ids: list[str], timeout_s: float = 20
) -> list[Job]:
    dispatcher.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            current = await asyncio.to_thread(jobs, sessions, ids)
            if all(job.status.is_final for job in current):
                return current
            await asyncio.sleep(0.05)
        raise AssertionError(f"jobs not final after {timeout_s} s: {current}")
    finally:
        await dispatcher.stop(grace_s=5)


def read_all(
    sessions: sessionmaker[Session],
    files: JobFiles,
    ids: list[str],
    engines: list[FakeEngine] | None = None,
    **overrides: object,
) -> list[Job]:
    """A dispatcher on ``engines`` (one FakeEngine by default), with ``overrides`` of the test
    settings, until the jobs ``ids`` end."""
    dispatcher = Dispatcher(
        sessions, EnginePool(engines or [FakeEngine()]), settings(**overrides), files
    )
    return asyncio.run(run_until_final(dispatcher, sessions, ids))


def start_then_stop(dispatcher: Dispatcher, grace_s: float) -> None:
    """Start ``dispatcher``, and stop it with ``grace_s`` once it runs a job."""

    async def scenario() -> None:
        dispatcher.start()
        await wait_until_async(lambda: dispatcher.running_jobs, 10, "a running job")
        await dispatcher.stop(grace_s=grace_s)

    asyncio.run(scenario())


def test_queued_jobs_are_read_and_their_documents_deleted_when_not_kept(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    ids = queue(sessions, files, [f"page {i}".encode() for i in range(10)])
    assert len(files.store.list("jobs/", limit=100)) == 10
    done = read_all(sessions, files, ids, [FakeEngine(), FakeEngine()], keep_images=False)
    assert [job.text for job in done] == [f"page {i}\n" for i in range(10)]
    assert all(job.status == JobStatus.SUCCEEDED and job.attempts == 1 for job in done)
    assert files.store.list("jobs/", limit=100) == []


def test_kept_documents_stay_in_the_store(sessions: sessionmaker[Session], files: JobFiles) -> None:
    ids = queue(sessions, files, [b"page to keep"])
    dispatcher = Dispatcher(sessions, EnginePool([FakeEngine()]), settings(keep_images=True), files)
    [job] = asyncio.run(run_until_final(dispatcher, sessions, ids))
    assert job.status == JobStatus.SUCCEEDED and job.document_key is not None
    assert files.read_document(job.document_key) == b"page to keep"


def test_a_job_whose_document_is_missing_fails_at_once_and_the_others_run(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    gone, fine = queue(sessions, files, [b"deleted behind our back", b"fine page"])
    files.release_documents([gone])
    engine = FakeEngine()
    missing, read = read_all(sessions, files, [gone, fine], [engine])
    assert (missing.status, missing.error_code, missing.attempts) == (
        JobStatus.FAILED,
        "document_missing",
        1,
    )
    assert missing.error_message and "submit it again" in missing.error_message
    assert read.status == JobStatus.SUCCEEDED and engine.seen == [b"fine page"]


class StoreDownFor(FileStore):
    """A folder whose reads fail as a store that does not answer would, ``times`` times."""

    def __init__(self, root: Path, times: int):
        super().__init__(root)
        self.failures_left = times

    def get(self, key: str) -> bytes:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise BlobStoreError("connection refused")
        return super().get(key)


def test_a_store_that_does_not_answer_costs_no_attempt(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    store = StoreDownFor(tmp_path / "blobs", times=3)
    files = JobFiles(store)
    ids = queue(sessions, files, [b"page"], max_attempts=1)
    [job] = read_all(sessions, files, ids)
    # Three claims met the outage and gave the job back uncharged; the fourth read it.
    assert store.failures_left == 0
    assert (job.status, job.attempts, job.text) == (JobStatus.SUCCEEDED, 1, "page\n")


def test_a_retryable_failure_is_retried(sessions: sessionmaker[Session], files: JobFiles) -> None:
    [job] = read_all(sessions, files, queue(sessions, files, [b"flaky page"]))
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2 and job.text == "flaky page\n"


def test_a_poison_image_fails_after_max_attempts_without_blocking_others(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, [POISON, b"after 1", b"after 2"], max_attempts=2)
    engine = FakeEngine()
    poison, *others = read_all(sessions, files, ids, [engine])
    assert poison.status == JobStatus.FAILED
    assert poison.attempts == 2
    assert poison.error_code == "engine_crashed"
    assert "gave up after 2 attempts" in (poison.error_message or "")
    assert [job.text for job in others] == ["after 1\n", "after 2\n"]
    assert engine.seen.count(POISON) == 2


def test_a_dead_workers_job_is_requeued_by_the_reaper(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    [job_id] = queue(sessions, files, [b"orphan"])
    with sessions.begin() as session:
        claim_next(session, worker_id="dead-worker", lease_s=30)
        session.execute(
            update(JobRow).values(lease_until=job_store.utcnow() - timedelta(seconds=1))
        )
    [job] = read_all(sessions, files, [job_id])
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    assert job.worker_id != "dead-worker"


def test_stop_gives_unfinished_jobs_back_without_charging_an_attempt(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, [b"slow page"])
    engine = FakeEngine(delay_s=1.5)
    told: list[int] = []  # the pages the engine had returned when told to stop replacing

    class Pool(EnginePool):
        def stop_replacing(self) -> None:
            told.append(engine.returned)
            super().stop_replacing()

    pool = Pool([engine])
    dispatcher = Dispatcher(sessions, pool, settings(), files)

    async def scenario() -> None:
        dispatcher.start()
        # Once the engine has the page (a running job may still be on its way to it).
        await wait_until_async(lambda: engine.seen, 10, "the page on the engine")
        await dispatcher.stop(grace_s=0.1)

    asyncio.run(scenario())
    [job] = jobs(sessions, ids)
    assert job.status == JobStatus.QUEUED and job.attempts == 0 and job.worker_id is None
    # Before the page was cut off: its engine is killed, not replaced, as the server stops.
    assert told == [0]
    # The engine thread finishes after the stop; its late result must not land.
    wait_until(lambda: engine.returned, 5, "the engine's late result")
    [job] = jobs(sessions, ids)
    assert job.status == JobStatus.QUEUED
    pool.close()


def test_stop_waits_for_running_jobs_within_the_grace(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    ids = queue(sessions, files, [b"page"])
    pool = EnginePool([FakeEngine(delay_s=0.5)])
    start_then_stop(Dispatcher(sessions, pool, settings(), files), grace_s=10)
    [job] = jobs(sessions, ids)
    assert job.status == JobStatus.SUCCEEDED


def test_an_image_read_before_is_answered_from_its_stored_result(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    with sessions.begin() as session:
        job_store.record_finished(
            session, image=b"seen page", started_at=job_store.utcnow(), text="stored text\n"
        )
    ids = queue(sessions, files, [b"seen page", b"new page"])
    engine = FakeEngine()
    done = read_all(sessions, files, ids, [engine])
    assert [job.text for job in done] == ["stored text\n", "new page\n"]
    assert engine.seen == [b"new page"]


def test_reuse_switched_off_reads_every_image(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    with sessions.begin() as session:
        job_store.record_finished(
            session, image=b"seen page", started_at=job_store.utcnow(), text="stored text\n"
        )
    ids = queue(sessions, files, [b"seen page"])
    engine = FakeEngine()
    dispatcher = Dispatcher(sessions, EnginePool([engine]), settings(reuse_results=False), files)
    [job] = asyncio.run(run_until_final(dispatcher, sessions, ids))
    assert job.text == "seen page\n" and engine.seen == [b"seen page"]


def test_reuse_never_crosses_owners(sessions: sessionmaker[Session], files: JobFiles) -> None:
    with sessions.begin() as session:
        job_store.record_finished(
            session,
            image=b"page",
            started_at=job_store.utcnow(),
            text="alice's text\n",
            owner="alice",
        )
        [job_id] = [
            job_store.create_job(
                session, document=files.store_document(b"page"), max_attempts=3, owner="bob"
            ).id
        ]
    engine = FakeEngine()
    [job] = read_all(sessions, files, [job_id], [engine])
    assert job.text == "page\n" and engine.seen == [b"page"]


def test_a_result_too_large_for_one_database_write_fails_at_once(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, [b"a page with a huge result"])
    # A database taking writes of 1,000 bytes at most (MySQL's max_allowed_packet).
    dispatcher = Dispatcher(
        sessions, EnginePool([FakeEngine()]), settings(), files, max_write_bytes=1000
    )
    [job] = asyncio.run(run_until_final(dispatcher, sessions, ids))
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert job.error_code == "result_too_large"
    assert "max_allowed_packet" in (job.error_message or "")


# -- claims and outcomes in batches ---------------------------------------------------------


@dataclass
class Statements:
    """The claim and finish statements run on an engine, with the rows each matched."""

    claims: list[int] = field(default_factory=list)
    finishes: list[int] = field(default_factory=list)
    # Set when the first result write begins (its outcome is in the writer's hands).
    finishing: threading.Event = field(default_factory=threading.Event)


@contextmanager
def watched(engine: Engine, stall_first_finish_s: float = 0.0) -> Iterator[Statements]:
    """Count the claim UPDATEs (they set ``started_at``) and the result UPDATEs (they set
    ``finished_at``); optionally hold the first result write, as a slow database would."""
    seen = Statements()

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if _is_finish(statement):
            seen.finishing.set()
            if stall_first_finish_s and not seen.finishes:
                time.sleep(stall_first_finish_s)

    def after(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE jobs SET") and "started_at" in statement:
            seen.claims.append(cursor.rowcount)
        elif _is_finish(statement):
            seen.finishes.append(cursor.rowcount)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def _is_finish(statement: str) -> bool:
    return statement.startswith("UPDATE jobs SET") and "finished_at" in statement


def test_free_engines_are_filled_by_one_claim(
    sessions: sessionmaker[Session], files: JobFiles, db_engine: Engine
) -> None:
    ids = queue(sessions, files, [f"page {i}".encode() for i in range(8)])
    gate = threading.Event()
    engines = [FakeEngine(gate=gate) for _ in range(4)]
    pool = EnginePool(list(engines))
    # A long lease: a job claimed ahead is given back after a third of it, which a stalled
    # machine could reach while the engines wait for the gate (one claim more).
    dispatcher = Dispatcher(sessions, pool, settings(lease_s=30), files)

    async def scenario() -> list[Job]:
        with watched(db_engine) as seen:
            dispatcher.start()
            await wait_until_async(lambda: dispatcher.running_jobs == 5, 10, "five held jobs")
            claimed_first = list(seen.claims)
            await asyncio.sleep(0.2)
            # Four read, the fifth waits for the first engine free; no more is claimed.
            assert (pool.busy, dispatcher.running_jobs, seen.claims) == (4, 5, claimed_first)
            gate.set()
            done = await run_until_final(dispatcher, sessions, ids)
        # Four engines free at the start: one claim of four jobs and one ahead, not five
        # claims of one.
        assert claimed_first == [4 + AHEAD]
        assert sum(seen.claims) == 8 and len(seen.claims) < 8
        return done

    done = asyncio.run(scenario())
    assert all(job.status == JobStatus.SUCCEEDED and job.attempts == 1 for job in done)
    assert sorted(page for engine in engines for page in engine.seen) == sorted(
        f"page {i}".encode() for i in range(8)
    )
    assert dispatcher.counters.values()["claimed"] == 8


def test_an_engine_goes_from_job_to_job_without_waiting_for_a_claim(
    sessions: sessionmaker[Session], files: JobFiles, db_engine: Engine
) -> None:
    ids = queue(sessions, files, [f"page {i}".encode() for i in range(4)])
    engine = FakeEngine(delay_s=0.5)

    def slow_claims(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE jobs SET") and "started_at" in statement:
            time.sleep(0.3)  # a database far away, or busy

    event.listen(db_engine, "before_cursor_execute", slow_claims)
    try:
        done = read_all(sessions, files, ids, [engine])
    finally:
        event.remove(db_engine, "before_cursor_execute", slow_claims)
    assert [job.text for job in done] == [f"page {i}\n" for i in range(4)]
    # The next job was claimed, and its document read, while the engine read the one before.
    gaps = [began - ended for (_, ended), (began, _) in itertools.pairwise(engine.spans)]
    assert len(gaps) == 3 and max(gaps) < 0.15, gaps


def test_outcomes_that_are_ready_together_are_written_in_one_transaction(
    sessions: sessionmaker[Session], files: JobFiles, db_engine: Engine
) -> None:
    ids = queue(sessions, files, [f"page {i}".encode() for i in range(4)])
    gate = threading.Event()
    dispatcher = Dispatcher(
        sessions, EnginePool([FakeEngine(gate=gate) for _ in range(4)]), settings(), files
    )

    async def scenario() -> list[Job]:
        # The first write is held for a while: the outcomes that end meanwhile wait for it,
        # then go together.
        with watched(db_engine, stall_first_finish_s=1.0) as seen:
            dispatcher.start()
            await wait_until_async(lambda: dispatcher.running_jobs == 4, 10, "four running jobs")
            gate.set()
            done = await run_until_final(dispatcher, sessions, ids)
        assert sum(seen.finishes) == 4 and len(seen.finishes) < 4
        return done

    done = asyncio.run(scenario())
    assert [job.text for job in done] == [f"page {i}\n" for i in range(4)]
    assert (
        dispatcher.counters.values()["succeeded"] == 4
        and dispatcher.counters.values()["lost_leases"] == 0
    )


def write_together(
    sessions: sessionmaker[Session], files: JobFiles, outcomes: list[JobOutcome], lease_s: float
) -> tuple[list[bool | None], DispatcherCounters]:
    """Hand ``outcomes`` to worker "me"'s OutcomeWriter at the same moment; what each write
    gave, and the counters."""
    counters = DispatcherCounters()
    transactions = Transactions(sessions, counters)
    writer = OutcomeWriter(
        transactions, Documents(files), worker_id="me", keep_images=False, lease_s=lease_s
    )

    async def scenario() -> list[bool | None]:
        writer.start()
        try:
            return await asyncio.gather(*(writer.write(outcome) for outcome in outcomes))
        finally:
            await writer.close()

    return asyncio.run(scenario()), counters


def test_a_lost_lease_in_a_batch_is_counted_and_its_outcome_not_written(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, [b"stolen", b"kept 1", b"kept 2"])
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="me", lease_s=30, limit=3)
    # Another server takes the first job over (its lease ran out, say) before we write.
    with sessions.begin() as session:
        session.execute(update(JobRow).where(JobRow.id == ids[0]).values(worker_id="thief"))
    # Ready at the same moment: one transaction for the three.
    written, counters = write_together(
        sessions, files, [JobOutcome(i, text=f"{i}\n") for i in ids], 3
    )
    assert written == [False, True, True]
    stolen, *kept = jobs(sessions, ids)
    assert (stolen.status, stolen.worker_id, stolen.text) == (JobStatus.RUNNING, "thief", None)
    assert all(job.status == JobStatus.SUCCEEDED for job in kept)
    assert counters.values()["db_errors"] == 0


def test_an_outcome_that_cannot_be_written_does_not_hold_back_the_others(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, [b"first", b"unwritable", b"third"])
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="me", lease_s=30, limit=3)
    # A lone surrogate cannot be encoded for the database: its batch fails, whatever the others.
    texts = ["first\n", "\ud800", "third\n"]
    outcomes = [JobOutcome(i, text=text) for i, text in zip(ids, texts, strict=True)]
    written, counters = write_together(sessions, files, outcomes, 1.5)
    assert written == [True, None, True]
    first, unwritable, third = jobs(sessions, ids)
    assert (first.text, third.text) == ("first\n", "third\n")
    assert (unwritable.status, unwritable.text) == (JobStatus.RUNNING, None)
    assert counters.values()["db_errors"] >= 2


def test_a_taken_over_job_is_counted_as_a_lost_lease_by_the_dispatcher(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, [b"stolen", b"kept"])
    gate = threading.Event()
    dispatcher = Dispatcher(
        sessions, EnginePool([FakeEngine(gate=gate), FakeEngine(gate=gate)]), settings(), files
    )

    async def scenario() -> None:
        dispatcher.start()
        try:
            await wait_until_async(lambda: dispatcher.running_jobs == 2, 10, "two running jobs")
            with sessions.begin() as session:
                session.execute(update(JobRow).where(JobRow.id == ids[0]).values(worker_id="thief"))
            gate.set()
            await wait_until_async(lambda: not dispatcher.running_jobs, 10, "the jobs to end")
        finally:
            await dispatcher.stop(grace_s=5)

    asyncio.run(scenario())
    stolen, kept = jobs(sessions, ids)
    assert (stolen.status, stolen.text) == (JobStatus.RUNNING, None)
    assert (kept.status, kept.text) == (JobStatus.SUCCEEDED, "kept\n")
    assert (
        dispatcher.counters.values()["lost_leases"] == 1
        and dispatcher.counters.values()["succeeded"] == 2
    )


def test_a_stop_writes_the_outcomes_that_are_ready_before_giving_jobs_back(
    sessions: sessionmaker[Session], files: JobFiles, db_engine: Engine
) -> None:
    ids = queue(sessions, files, [b"read in time"])
    engine = FakeEngine()
    dispatcher = Dispatcher(sessions, EnginePool([engine]), settings(), files)

    async def scenario() -> None:
        # The page is read at once, but its result write is slow: the grace ends meanwhile.
        with watched(db_engine, stall_first_finish_s=1.0) as seen:
            dispatcher.start()
            # Stop once the outcome is being written, not when the engine returned: on a
            # loaded machine the job may take longer than the grace to hand its outcome over,
            # and then it is rightly given back (the flake this test had).
            await wait_until_async(seen.finishing.is_set, 10, "the result write to begin")
            await dispatcher.stop(grace_s=0.1)

    asyncio.run(scenario())
    [job] = jobs(sessions, ids)
    assert (job.status, job.text, job.attempts) == (JobStatus.SUCCEEDED, "read in time\n", 1)


def stop_once(
    dispatcher: Dispatcher,
    db_engine: Engine,
    hook: Callable[..., None],
    reached: threading.Event,
    grace_s: float,
) -> None:
    """Run ``dispatcher`` with ``hook`` before each statement; stop it with ``grace_s`` once
    ``reached`` is set."""

    async def scenario() -> None:
        event.listen(db_engine, "before_cursor_execute", hook)
        try:
            dispatcher.start()
            await asyncio.to_thread(reached.wait, 10)
            await dispatcher.stop(grace_s=grace_s)
        finally:
            event.remove(db_engine, "before_cursor_execute", hook)

    asyncio.run(scenario())


def test_a_stop_gives_back_a_job_whose_result_write_it_could_not_make(
    sessions: sessionmaker[Session], files: JobFiles, db_engine: Engine
) -> None:
    # The page was read, but the database refused its result until the stop gave up on it:
    # the job left running until its lease ran out (then read again, at an attempt's cost).
    [job_id] = queue(sessions, files, [b"read, not written"])
    dispatcher = Dispatcher(sessions, EnginePool([FakeEngine()]), settings(), files)
    refused = threading.Event()

    def refuse_finish(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if _is_finish(statement):
            refused.set()
            raise OperationalError(statement, {}, Exception("the database refused it"))

    stop_once(dispatcher, db_engine, refuse_finish, refused, grace_s=0.1)
    [job] = jobs(sessions, [job_id])
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 0, None)


def test_a_stop_during_a_claim_gives_back_what_the_claim_took(
    sessions: sessionmaker[Session], files: JobFiles, db_engine: Engine
) -> None:
    ids = queue(sessions, files, [b"page"])
    claiming = threading.Event()

    def stall_claim(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE jobs SET") and "started_at" in statement:
            claiming.set()
            time.sleep(1.0)

    engine = FakeEngine()
    dispatcher = Dispatcher(sessions, EnginePool([engine]), settings(), files)

    # The claim commits after the stop began: the job must not stay running.
    stop_once(dispatcher, db_engine, stall_claim, claiming, grace_s=5)
    [job] = jobs(sessions, ids)
    assert claiming.is_set()
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 0, None)
    assert engine.seen == []


def test_two_dispatchers_never_read_a_job_twice(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    pages = [f"page {i}".encode() for i in range(24)]
    ids = queue(sessions, files, pages)
    engines = [FakeEngine(delay_s=0.005) for _ in range(6)]
    first = Dispatcher(sessions, EnginePool(engines[:3]), settings(), files)
    second = Dispatcher(sessions, EnginePool(engines[3:]), settings(), files)

    async def scenario() -> list[Job]:
        second.start()
        try:
            return await run_until_final(first, sessions, ids)
        finally:
            await second.stop(grace_s=5)

    done = asyncio.run(scenario())
    assert all(job.status == JobStatus.SUCCEEDED and job.attempts == 1 for job in done)
    read = [page for engine in engines for page in engine.seen]
    assert sorted(read) == sorted(pages)
    assert first.counters.values()["claimed"] + second.counters.values()["claimed"] == 24


def test_a_running_server_keeps_its_row_fresh_and_marks_it_stopped(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    """What the API's /readyz and a queued job's ``ocr_servers_alive`` read."""
    stale_s = 1.5
    pool = EnginePool([FakeEngine(), FakeEngine()], languages=("deu", "eng"))
    dispatcher = Dispatcher(sessions, pool, settings(stale_workers_s=stale_s), files)

    def now() -> server_store.Fleet:
        with sessions() as session:
            return server_store.fleet(session, stale_s=stale_s)

    async def scenario() -> None:
        dispatcher.start()
        try:
            await wait_until_async(lambda: now().alive, 10, "the server's row")
            [alive] = now().alive
            assert (alive.id, alive.engines, alive.languages) == (
                dispatcher.worker_id,
                2,
                ("deu", "eng"),
            )
            # Beats come a third of the stale time apart: it stays alive past that time.
            await asyncio.sleep(stale_s * 2)
            [again] = now().alive
            assert again.last_seen_at > alive.last_seen_at
        finally:
            await dispatcher.stop(grace_s=5)

    asyncio.run(scenario())
    stopped = now()
    assert stopped.alive == () and stopped.last is not None
    assert stopped.last.stopped_at is not None
    assert stopped.stalled() is not None and "(the last one stopped)" in stopped.stalled()


class SlowPages(FakeEngine):
    """A FakeEngine that takes ``delays_s[image]`` to read the pages named there."""

    def __init__(self, delays_s: dict[bytes, float]):
        super().__init__()
        self.delays_s = delays_s

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage:
        time.sleep(self.delays_s.get(task.document, 0.0))
        return super().recognize_page(task, abandoned)


# On MySQL alone: on SQLite the stalled heartbeat holds the one write lock, so nothing can be
# claimed meanwhile whatever the dispatcher does.
@pytest.mark.parametrize(
    "database_url", [pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True
)
@pytest.mark.parametrize(
    "claim_answered_late", [False, True], ids=["queued-while-stuck", "claim-answered-late"]
)
def test_a_server_whose_heartbeat_is_stuck_claims_no_job_it_could_not_keep(
    sessions: sessionmaker[Session], files: JobFiles, db_engine: Engine, claim_answered_late: bool
) -> None:
    """The partition test's job read three times: back on the network, the cut-off server
    claimed the job again while its heartbeat still waited for the answer to a beat sent during
    the cut (TCP retransmits back off to seconds; read_timeout is 30 s). That job's lease ran
    out before the next beat, the reaper took it back, it was read again. The claim either went
    out once the server was back, or was itself sent during the cut and answered after it."""
    lease_s = 2.0
    stall_s = 3 * lease_s
    ids = queue(sessions, files, [b"held"])
    stalled = threading.Event()
    claim_stalled = threading.Event()

    def stall(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # A heartbeat's UPDATE sets lease_until first, a claim's status and started_at.
        if statement.startswith("UPDATE jobs SET lease_until") and not stalled.is_set():
            stalled.set()
            time.sleep(stall_s)
        is_claim = statement.startswith("UPDATE jobs SET status") and "started_at" in statement
        if claim_answered_late and stalled.is_set() and is_claim and not claim_stalled.is_set():
            # Sent while the beat is on time, answered once it is overdue.
            claim_stalled.set()
            time.sleep(lease_s / 3 + 0.5)

    # "new" takes longer than a lease to read: a lease not kept alive runs out meanwhile.
    engines = [SlowPages({b"held": lease_s, b"new": 1.5 * lease_s}) for _ in range(2)]
    dispatcher = Dispatcher(sessions, EnginePool(engines), settings(lease_s=lease_s), files)

    def new_job_ended() -> bool:
        return jobs(sessions, ids[1:])[0].status.is_final

    async def scenario() -> None:
        dispatcher.start()
        try:
            await asyncio.to_thread(stalled.wait, 10)
            if not claim_answered_late:
                # The beat is overdue now (a beat every third of a lease).
                await asyncio.sleep(lease_s / 3 + 0.3)
            # A job for the second engine, which is free.
            ids.extend(await asyncio.to_thread(queue, sessions, files, [b"new"]))
            await wait_until_async(new_job_ended, 30, "the new job to end", 0.1)
        finally:
            await dispatcher.stop(grace_s=5)

    event.listen(db_engine, "before_cursor_execute", stall)
    try:
        asyncio.run(scenario())
    finally:
        event.remove(db_engine, "before_cursor_execute", stall)
    [new] = jobs(sessions, ids[1:])
    read = [page for engine in engines for page in engine.seen]
    assert claim_stalled.is_set() == claim_answered_late
    assert (new.status, new.text) == (JobStatus.SUCCEEDED, "new\n")
    assert (new.attempts, read.count(b"new")) == (1, 1), "the new job was read once"
    # Every page here is a job's one page: a claim given back is not counted as claimed.
    assert dispatcher.counters.values()["claimed"] == len(read)


def test_a_job_held_ahead_goes_back_to_the_queue_for_an_idle_server(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    # Server A reads a long job on its one engine and holds the next ahead; B comes later,
    # idle. Past a third of a lease (1 s here) A gives the job back and B reads it.
    slow, quick = queue(sessions, files, [b"slow", b"quick"])
    busy_a = Dispatcher(sessions, EnginePool([FakeEngine(delay_s=3.0)]), settings(), files)
    idle_b = Dispatcher(sessions, EnginePool([FakeEngine()]), settings(), files)

    async def scenario() -> None:
        busy_a.start()
        try:
            await wait_until_async(lambda: busy_a.running_jobs == 2, 10, "A holding both jobs")
            idle_b.start()
            await wait_until_async(
                lambda: jobs(sessions, [quick])[0].status.is_final, 10, "the quick job read"
            )
        finally:
            await asyncio.gather(busy_a.stop(grace_s=5), idle_b.stop(grace_s=5))

    asyncio.run(scenario())
    slow_job, quick_job = jobs(sessions, [slow, quick])
    assert slow_job.worker_id == busy_a.worker_id and slow_job.text == "slow\n"
    assert quick_job.worker_id == idle_b.worker_id and quick_job.text == "quick\n"
    assert quick_job.attempts == 1  # given back uncharged
    # Each job counted once, by the server that read it.
    assert (busy_a.counters.values()["claimed"], idle_b.counters.values()["claimed"]) == (1, 1)


def test_no_job_is_held_ahead_while_pages_of_a_started_document_wait(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    # The further pages of a document being read get engines first: a job held ahead would wait
    # behind all of them, shown as running, and go back and forth to the queue. It stays queued
    # until the document's last pages have their engines.
    dispatcher = Dispatcher(
        sessions, EnginePool([FakeEngine(delay_s=0.6), FakeEngine(delay_s=0.6)]), settings(), files
    )
    with sessions.begin() as session:
        document = files.store_document(b"page")
        big = job_store.create_job(
            session, document=document, max_attempts=3, options=OcrOptions(), pages_total=8
        ).id
    seen: list[tuple[int, str]] = []

    async def scenario() -> None:
        dispatcher.start()
        try:
            await wait_until_async(lambda: dispatcher.running_jobs == 1, 10, "the big job running")
            [small] = await asyncio.to_thread(queue, sessions, files, [b"small"])
            dispatcher.notify()
            while True:
                big_job, small_job = await asyncio.to_thread(jobs, sessions, [big, small])
                if small_job.status.is_final:
                    return
                seen.append((big_job.pages_done or 0, small_job.status.value))
                await asyncio.sleep(0.02)
        finally:
            await dispatcher.stop(grace_s=5)

    asyncio.run(scenario())
    # Two engines: while at most 2 of the 8 pages are done, pages 5-8 still wait for engines.
    # That lasts about 1.1 s; a sample takes 20 ms plus two reads, slower on a loaded machine.
    early = [status for done, status in seen if done <= 2]
    assert len(early) >= 5 and set(early) == {"queued"}, seen


def test_synchronous_reads_that_keep_every_engine_busy_leave_the_queue_its_turn(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    # Three callers loop synchronous reads on two engines: a queued job is read while they go
    # on (before, it stayed queued for as long as they ran; 84 s in a security walkthrough).
    pool = EnginePool([FakeEngine(delay_s=0.2), FakeEngine(delay_s=0.2)])
    pool.queue_turn_s = 0.5
    dispatcher = Dispatcher(sessions, pool, settings(), files)
    synchronous: list[float] = []  # when each synchronous read ended
    done_at: list[float] = []  # when the job was queued, and when it was seen read

    async def scenario() -> None:
        flooding = True

        async def caller() -> None:
            while flooding:
                task = PageTask(b"sync", 0, OcrOptions(), 300)
                await pool.recognize_pages(task, (1,), urgent=True)
                synchronous.append(time.monotonic())

        dispatcher.start()
        callers = [asyncio.create_task(caller()) for _ in range(3)]
        try:
            await wait_until_async(lambda: len(synchronous) >= 6, 10, "synchronous reads")
            [job_id] = await asyncio.to_thread(queue, sessions, files, [b"queued"])
            done_at.append(time.monotonic())
            dispatcher.notify()

            async def read() -> bool:
                [job] = await asyncio.to_thread(jobs, sessions, [job_id])
                return job.status == JobStatus.SUCCEEDED

            deadline = time.monotonic() + 15
            while not await read() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            done_at.append(time.monotonic())
        finally:
            flooding = False
            await asyncio.gather(*callers)
            await dispatcher.stop(grace_s=5)

    asyncio.run(scenario())
    # Read while the synchronous reads went on (they stop once it is read), within seconds.
    queued_at, read_at = done_at
    assert read_at - queued_at < 5
    assert sum(queued_at < ended < read_at for ended in synchronous) >= 2


def test_a_stop_as_the_engine_comes_gives_the_engine_back(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    # The wait for an engine is over but the job has not resumed when the stop cancels it.
    queue(sessions, files, [b"page"])
    pool = EnginePool([FakeEngine()])
    dispatcher = Dispatcher(sessions, pool, settings(), files)
    with sessions.begin() as session:
        [job] = job_store.claim_batch(session, worker_id=dispatcher.worker_id, lease_s=30, limit=1)

    async def scenario() -> int:
        other = pool.acquire_nowait()  # another job reads on the only engine
        assert other is not None
        engine = asyncio.ensure_future(pool.acquire(urgent=False))
        task = asyncio.create_task(dispatcher._execute(engine, job))
        await wait_until_async(lambda: pool.waiting(urgent=False) == 1, 5, "the job waiting")
        await asyncio.sleep(0.1)  # its document is read
        pool.release(other)
        await asyncio.sleep(0)  # the wait is over; the job task has not resumed
        assert engine.done() and not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return pool.busy

    assert asyncio.run(scenario()) == 0
