"""Leases: one holder at a time for singleton loops (the reconciler), across replicas.

A lease lasts ``ttl`` seconds unless renewed. A holder on this host whose process is gone
loses it at once, so a server killed and restarted takes over without waiting.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from taskspace.db.engine import transaction
from taskspace.db.models import Lease, utcnow
from taskspace.services.runtime import Runtime


def _holder_is_dead(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def acquire(rt: Runtime, name: str, *, ttl: float) -> bool:
    """Take or renew the lease. True when this process holds it for the next ``ttl`` seconds."""
    now = utcnow()
    async with transaction(rt.sessions) as session:
        lease = await session.get(Lease, name, with_for_update=True)
        if lease is None:
            session.add(Lease(name=name, holder=rt.instance, expires_at=now + timedelta(seconds=ttl)))
            return True
        if lease.holder == rt.instance or lease.expires_at <= now or _holder_is_dead(lease.holder):
            lease.holder = rt.instance
            lease.expires_at = now + timedelta(seconds=ttl)
            return True
        return False


async def release(rt: Runtime, name: str) -> None:
    async with transaction(rt.sessions) as session:
        lease = await session.get(Lease, name)
        if lease is not None and lease.holder == rt.instance:
            await session.delete(lease)
