"""The engine pool hands free engines to synchronous callers before queued jobs."""

from __future__ import annotations

import asyncio

import pytest

from ocr_server.pool import EnginePool


class FakeEngine:
    def __init__(self, name: str):
        self.name = name

    def recognize(self, image: bytes) -> str:
        return f"{self.name}:{image.decode()}\n"


def test_urgent_waiters_are_served_first() -> None:
    async def scenario() -> list[str]:
        pool = EnginePool([FakeEngine("a")])
        held = await pool.acquire(urgent=False)
        order: list[str] = []

        async def wait(label: str, urgent: bool) -> None:
            engine = await pool.acquire(urgent=urgent)
            order.append(label)
            pool.release(engine)

        background = asyncio.create_task(wait("job", urgent=False))
        await asyncio.sleep(0)
        sync = asyncio.create_task(wait("sync", urgent=True))
        await asyncio.sleep(0)
        pool.release(held)
        await asyncio.gather(background, sync)
        pool.close()
        return order

    assert asyncio.run(scenario()) == ["sync", "job"]


def test_recognize_runs_on_an_engine_and_gives_it_back() -> None:
    async def scenario() -> tuple[list[str], int]:
        pool = EnginePool([FakeEngine("a"), FakeEngine("b")])
        texts = await asyncio.gather(
            *(pool.recognize(str(i).encode(), urgent=True) for i in range(6))
        )
        busy = pool.busy
        pool.close()
        return list(texts), busy

    texts, busy = asyncio.run(scenario())
    assert [t.split(":")[1] for t in texts] == [f"{i}\n" for i in range(6)]
    assert busy == 0


def test_saturation_is_reported() -> None:
    async def scenario() -> tuple[bool, bool]:
        pool = EnginePool([FakeEngine("a")])
        held = await pool.acquire(urgent=True)
        waiter = asyncio.create_task(pool.acquire(urgent=True))
        await asyncio.sleep(0)
        full = pool.try_acquire_urgent(max_waiting=1)
        room = pool.try_acquire_urgent(max_waiting=2)
        pool.release(held)
        pool.release(await waiter)
        pool.close()
        return full, room

    assert asyncio.run(scenario()) == (False, True)


def test_a_cancelled_waiter_does_not_swallow_an_engine() -> None:
    async def scenario() -> int:
        pool = EnginePool([FakeEngine("a")])
        held = await pool.acquire(urgent=False)
        waiter = asyncio.create_task(pool.acquire(urgent=False))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        pool.release(held)
        free = pool.size - pool.busy
        pool.close()
        return free

    assert asyncio.run(scenario()) == 1
