"""Bursts of new sessions: the bounded, fair spawn queue (places told as `progress`),
and the elastic pool whose target follows the recent rate of new sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.spawnqueue import SpawnQueue
from tests.conftest import DEADLINE, Conversation, ServerProcess, eventually


async def test_the_spawn_queue_bounds_starts_and_serves_callers_in_order() -> None:
    queue = SpawnQueue(2)
    started: list[str] = []
    places: dict[str, list[tuple[int, int]]] = {}
    release: dict[str, asyncio.Event] = {}

    async def start(name: str, refill: bool = False) -> None:
        async def on_place(place: int, waiting: int) -> None:
            places.setdefault(name, []).append((place, waiting))

        release[name] = asyncio.Event()
        async with queue.place(on_place, refill=refill):
            started.append(name)
            assert queue.running <= queue.limit
            await release[name].wait()

    async with asyncio.timeout(DEADLINE), asyncio.TaskGroup() as tasks:
        for name in ("a", "b"):
            tasks.create_task(start(name))
        await eventually(_true(lambda: started == ["a", "b"]), "two start at once")
        tasks.create_task(start("refill", refill=True))
        for name in ("c", "d", "e"):
            tasks.create_task(start(name))
        await eventually(_true(lambda: queue.waiting == 4), "the rest wait")
        assert started == ["a", "b"]
        for done, name in enumerate(("a", "b", "c", "d"), start=1):
            release[name].set()  # one place frees: the next in line starts
            await eventually(_started(started, 2 + done), "the next starts")
        release["e"].set()
        release["refill"].set()
    # Callers in the order they came; the pool's refill after every caller.
    assert started == ["a", "b", "c", "d", "e", "refill"]
    # Each waiting caller heard its place, and heard it move up.
    assert places["c"][0] == (1, 2) and places["e"][0] == (3, 4)
    assert places["e"] == [(3, 4), (2, 3), (1, 2)]
    assert places["refill"][-1] == (1, 1)


async def test_a_caller_that_gives_up_leaves_the_line() -> None:
    queue = SpawnQueue(1)
    hold = asyncio.Event()

    async def first() -> None:
        async with queue.place():
            await hold.wait()

    async with asyncio.timeout(DEADLINE), asyncio.TaskGroup() as tasks:
        tasks.create_task(first())
        await eventually(_true(lambda: queue.running == 1), "the first starts")
        waiting = tasks.create_task(_enter(queue))
        await eventually(_true(lambda: queue.waiting == 1), "the second waits")
        waiting.cancel()
        await eventually(_true(lambda: queue.waiting == 0), "it left the line")
        hold.set()
    assert queue.running == 0


async def _enter(queue: SpawnQueue) -> None:
    async with queue.place():
        pass


def _started(started: list[str], count: int) -> Callable[[], Awaitable[bool]]:
    return _true(lambda: len(started) == count)


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()

    return predicate


async def test_opens_past_the_spawn_limit_wait_in_line_with_progress() -> None:
    """With one start at a time and no pool, opens at once each get a process in turn;
    those that wait are told their place in line."""
    opens = 4
    async with ServerProcess(
        "--pool-size", "0", "--max-concurrent-spawns", "1", env={"HOTSVC_EMU_STARTUP_DELAY": "0.3"}
    ) as server:
        stub = server.stub()
        talks = [Conversation(stub) for _ in range(opens)]
        async with asyncio.timeout(DEADLINE):
            opened = await asyncio.gather(*(talk.open() for talk in talks))
            for talk in talks:
                assert (await talk.ask("Remember 5")).text == "OK"
        assert len({o.session_id for o in opened}) == opens
        told = [status for talk in talks for status in talk.queued]
        assert any(s.startswith("waiting to start Claude Code: ") for s in told), told
        assert any(" 1 of " in s for s in told), told


async def test_the_elastic_pool_grows_with_a_burst_and_shrinks_after() -> None:
    async with ServerProcess("--pool-min", "1", "--pool-max", "4") as server:
        stub = server.stub()

        async def status() -> pb.PoolStatusResponse:
            return await stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)

        async def pool_at(size: int) -> bool:
            return (await status()).pool_size == size

        await eventually(lambda: pool_at(1), "the pool at its minimum")
        assert (await status()).target_size == 1
        talks = [Conversation(stub) for _ in range(4)]
        for talk in talks:  # a burst of new sessions
            await talk.open()
        assert (await status()).target_size == 4
        await eventually(lambda: pool_at(4), "the pool grown to the burst's rate")

        async def back_to_minimum() -> bool:
            current = await status()
            return current.target_size == 1 and current.pool_size == 1

        # The burst ages out of the pool's window (10 s): it shrinks back.
        await eventually(back_to_minimum, "the pool back at its minimum")
