"""Leases on SQLite and on PostgreSQL: one replica at a time runs a session; a replica
gone quiet for a lease period is taken over, and a replica that lost a lease is told."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from hotsvc.errors import HeldElsewhere
from hotsvc.store import LeaseKeeper, SessionStore
from tests.conftest import OpenStore, eventually
from tests.test_store import record


class Replica:
    """A store and a LeaseKeeper, as a replica holds them; `lost` is what it was told."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.lost: list[str] = []
        self.keeper = LeaseKeeper(store, self.lost.append)

    @property
    def name(self) -> str:
        return self.store.replica_id

    async def try_acquire(self, session_id: str) -> bool:
        try:
            await self.keeper.acquire(session_id)
        except HeldElsewhere:
            return False
        return True


async def replicas(stores: OpenStore, *lease_seconds: float) -> list[Replica]:
    return [
        Replica(await stores(f"replica-{n}", seconds)) for n, seconds in enumerate(lease_seconds)
    ]


async def test_replicas_racing_for_a_session_exactly_one_wins(stores: OpenStore) -> None:
    racers = await replicas(stores, 15, 15, 15)
    for _ in range(20):
        session_id = str(uuid.uuid4())
        won = await asyncio.gather(*(r.try_acquire(session_id) for r in racers))
        assert sum(won) == 1, won
        (winner,) = (r for r, w in zip(racers, won, strict=True) if w)
        for replica in racers:
            lease = await replica.store.lease(session_id)
            assert lease is not None and lease.replica_id == winner.name
            assert replica.keeper.holds(session_id) == (replica is winner)
        assert await winner.try_acquire(session_id)  # its own lease: taken again


async def test_refusal_names_the_holder(stores: OpenStore) -> None:
    holder, other = await replicas(stores, 15, 15)
    await holder.keeper.acquire("s-1")
    with pytest.raises(HeldElsewhere) as refused:
        await other.keeper.acquire("s-1")
    assert refused.value.metadata["replicaId"] == holder.name
    assert refused.value.metadata["sessionId"] == "s-1"
    assert 0 < float(refused.value.metadata["leaseSecondsLeft"]) <= 15


async def test_an_expired_lease_is_taken_over_and_its_holder_told(stores: OpenStore) -> None:
    quiet, taker = await replicas(stores, 0.2, 15)  # `quiet` stopped renewing
    await quiet.keeper.acquire("s-1")

    async def taken() -> bool:
        return await taker.try_acquire("s-1")

    await eventually(taken, "the expired lease is taken over")
    assert (await taker.store.lease("s-1")).replica_id == taker.name  # type: ignore[union-attr]
    assert not await quiet.try_acquire("s-1")  # the taker's now, unexpired
    await quiet.keeper.renew()
    assert quiet.lost == ["s-1"] and not quiet.keeper.holds("s-1")


async def test_renewing_keeps_the_lease(stores: OpenStore) -> None:
    holder, other = await replicas(stores, 3, 15)
    await holder.keeper.acquire("s-1")
    renewing = asyncio.create_task(holder.keeper.run())
    try:
        # Past the lease period once over (four renewals, a third of it apart), the other
        # replica has kept trying and never got it.
        async def renewed_past_the_first_lease() -> bool:
            assert not await other.try_acquire("s-1")
            return holder.keeper.rounds >= 4

        await eventually(renewed_past_the_first_lease, "four renewal rounds")
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
    assert holder.lost == [] and holder.keeper.holds("s-1")


async def test_a_replica_that_cannot_renew_is_told(stores: OpenStore) -> None:
    holder, other = await replicas(stores, 0.3, 15)
    await holder.keeper.acquire("s-1")
    await holder.keeper.acquire("s-2")
    await holder.store.close()  # its database connection is gone
    renewing = asyncio.create_task(holder.keeper.run())
    try:

        async def told() -> bool:
            return sorted(holder.lost) == ["s-1", "s-2"]

        await eventually(told, "the replica learns both leases are lost")
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
    assert holder.keeper.held() == frozenset()

    async def taken() -> bool:
        return await other.try_acquire("s-1")

    await eventually(taken, "the other replica takes the session over")


async def test_release_hands_the_session_over_at_once(stores: OpenStore) -> None:
    first, second = await replicas(stores, 15, 15)
    await first.keeper.acquire("s-1")
    await first.keeper.acquire("s-2")
    assert not await second.try_acquire("s-1")
    await first.keeper.release("s-1")
    assert await second.try_acquire("s-1")
    await first.keeper.release_all()
    assert await second.try_acquire("s-2")
    assert first.keeper.held() == frozenset() and first.lost == []


async def test_forgetting_a_session_drops_its_lease(stores: OpenStore) -> None:
    first, second = await replicas(stores, 15, 15)
    await first.store.save(record("s-1"))
    await first.keeper.acquire("s-1")
    await second.store.forget("s-1")
    assert await second.store.lease("s-1") is None
    await first.keeper.renew()
    assert first.lost == ["s-1"]


async def test_a_restarted_replica_drops_its_old_leases(stores: OpenStore) -> None:
    before = await stores("replica-a")
    await LeaseKeeper(before, lambda _: None).acquire("s-1")
    await before.close()  # killed: never released
    other = Replica(await stores("replica-b"))
    assert not await other.try_acquire("s-1")
    restarted = await stores("replica-a")
    await restarted.sweep_orphans()  # at start, like the service
    assert await other.try_acquire("s-1")
