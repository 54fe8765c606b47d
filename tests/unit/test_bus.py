"""The in-process signal that wakes clients long-polling for a workspace's events."""

from __future__ import annotations

import asyncio
import time

from taskspace.services.bus import Bus


async def test_events_published_while_a_waiter_was_looking_are_not_missed() -> None:
    bus = Bus()
    seen = bus.generation  # the waiter reads the events...
    await bus.published()  # ...while the driver writes the next one

    began = time.monotonic()
    await bus.wait(5, since=seen)

    assert time.monotonic() - began < 1


async def test_a_waiter_is_woken_by_the_next_publication_or_gives_up_at_its_timeout() -> None:
    bus = Bus()
    waiter = asyncio.create_task(bus.wait(5, since=bus.generation))
    await asyncio.sleep(0.05)
    assert not waiter.done()

    await bus.published()
    await asyncio.wait_for(waiter, 1)

    began = time.monotonic()
    await bus.wait(0.1, since=bus.generation)
    assert 0.09 <= time.monotonic() - began < 1
