"""Leases: one holder at a time, renewed by it, taken over after expiry or when its process died."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

from taskspace.db.engine import transaction
from taskspace.db.models import Lease
from taskspace.services import leases
from taskspace.services.runtime import Runtime

NAME = "reconciler"


def as_holder(rt: Runtime, instance: str) -> Runtime:
    """The same installation seen from another process (same database, another holder id)."""
    return dataclasses.replace(rt, instance=instance)


async def lease(rt: Runtime) -> Lease | None:
    async with transaction(rt.sessions) as session:
        return await session.get(Lease, NAME)


def dead_pid() -> int:
    # Above the kernel's pid limit: no process can have it.
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


async def test_the_holder_acquires_and_renews(rt: Runtime) -> None:
    assert await leases.acquire(rt, NAME, ttl=30)
    first = await lease(rt)
    assert await leases.acquire(rt, NAME, ttl=60)
    renewed = await lease(rt)

    assert first is not None and renewed is not None
    assert first.holder == renewed.holder == rt.instance
    assert renewed.expires_at > first.expires_at


async def test_another_holder_cannot_take_a_live_lease(rt: Runtime) -> None:
    other = as_holder(rt, "other-host:4242")
    assert await leases.acquire(rt, NAME, ttl=30)

    assert not await leases.acquire(other, NAME, ttl=30)
    # A holder on this host whose process is alive keeps it too.
    assert not await leases.acquire(as_holder(rt, f"{socket.gethostname()}:1"), NAME, ttl=30)
    stored = await lease(rt)
    assert stored is not None and stored.holder == rt.instance


async def test_another_holder_takes_an_expired_lease(rt: Runtime) -> None:
    other = as_holder(rt, "other-host:4242")
    assert await leases.acquire(rt, NAME, ttl=0.05)
    assert not await leases.acquire(other, NAME, ttl=30)

    await asyncio.sleep(0.1)

    assert await leases.acquire(other, NAME, ttl=30)
    assert not await leases.acquire(rt, NAME, ttl=30)
    stored = await lease(rt)
    assert stored is not None and stored.holder == other.instance


async def test_a_dead_holder_on_this_host_loses_the_lease_at_once(rt: Runtime) -> None:
    dead = as_holder(rt, f"{socket.gethostname()}:{dead_pid()}")
    assert await leases.acquire(dead, NAME, ttl=3600)

    assert await leases.acquire(rt, NAME, ttl=30)
    stored = await lease(rt)
    assert stored is not None and stored.holder == rt.instance


async def test_only_the_holder_releases(rt: Runtime) -> None:
    other = as_holder(rt, "other-host:4242")
    assert await leases.acquire(rt, NAME, ttl=30)

    await leases.release(other, NAME)
    assert (await lease(rt)) is not None
    await leases.release(rt, NAME)
    assert (await lease(rt)) is None
    assert await leases.acquire(other, NAME, ttl=30)
