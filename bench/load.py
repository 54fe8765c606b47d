"""A closed-loop load generator: N connections on loopback, each sending the next request as
soon as the previous answer arrived, for a fixed duration."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from bench.stats import summarize


async def _hammer(url: str, *, connections: int, duration: float, headers: dict[str, str],
                  cookies: dict[str, str]) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sizes: list[int] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(headers=headers, cookies=cookies, limits=limits, timeout=60,
                                 follow_redirects=False) as client:
        warm = await client.get(url)  # not counted: opens a connection, fills caches
        if warm.status_code != 200:
            raise RuntimeError(f"GET {url} answered {warm.status_code}: {warm.text[:300]}")
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + duration

        async def worker() -> None:
            while loop.time() < stop_at:
                started = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    latencies.append(elapsed)
                    sizes.append(len(response.content))
                else:
                    errors[str(response.status_code)] += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        wall = time.perf_counter() - began
    return {"connections": connections, "duration_seconds": round(wall, 3), "requests": len(latencies),
            "requests_per_second": round(len(latencies) / wall, 2) if wall else None,
            "errors": dict(errors), "response_bytes": max(sizes) if sizes else None,
            "latency_seconds": summarize(latencies), "samples": [round(x, 5) for x in latencies]}


def hammer(url: str, *, connections: int, duration: float, headers: dict[str, str] | None = None,
           cookies: dict[str, str] | None = None) -> dict[str, Any]:
    """GET ``url`` from ``connections`` concurrent connections for ``duration`` seconds;
    latency p50/p95 of the successful answers, requests per second, errors by status."""
    return asyncio.run(_hammer(url, connections=connections, duration=duration, headers=headers or {},
                               cookies=cookies or {}))
