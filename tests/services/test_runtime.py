"""The Runtime's turns: pages computed from SQLite one at a time, in the order they came."""

from __future__ import annotations

import asyncio

from taskspace.services.runtime import Runtime


async def test_pages_take_turns_in_arrival_order_on_sqlite_and_none_on_a_database_server(rt: Runtime) -> None:
    order: list[str] = []

    async def page(name: str, work: float) -> None:
        async with rt.turn():
            order.append(f"{name} starts")
            await asyncio.sleep(work)  # a statement's wait, where another page could start
            order.append(f"{name} ends")

    await asyncio.gather(page("first", 0.05), page("second", 0), page("third", 0))

    if rt.engine.dialect.name == "sqlite":
        assert order == ["first starts", "first ends", "second starts", "second ends", "third starts", "third ends"]
    else:
        assert order[:3] == ["first starts", "second starts", "third starts"]
