"""In-process signals: wake the reconciler for a workspace, and wake clients waiting for events.

Other replicas learn of changes by polling the database; these signals only make the process
that made a change react at once.
"""

from __future__ import annotations

import asyncio


class Bus:
    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        #: How many times events were published: read it before looking at the events, and
        #: pass it to :meth:`wait`, so that what is published meanwhile is not missed.
        self.generation = 0
        self.reconcile_requested = asyncio.Event()
        self.notify_requested = asyncio.Event()
        self.pending: set[str] = set()

    def wake_reconciler(self, workspace_id: str | None = None) -> None:
        """Ask the reconciler to drive ``workspace_id`` now (or to run a whole pass)."""
        if workspace_id:
            self.pending.add(workspace_id)
        else:
            self.pending.add("*")
        self.reconcile_requested.set()

    def wake_notifier(self) -> None:
        """Ask the notification sender to look at the outbox now."""
        self.notify_requested.set()

    def take_pending(self) -> set[str]:
        pending, self.pending = self.pending, set()
        self.reconcile_requested.clear()
        return pending

    async def published(self) -> None:
        """Tell waiters that workspace events were written."""
        async with self._changed:
            self.generation += 1
            self._changed.notify_all()

    async def wait(self, timeout: float, *, since: int) -> None:
        """Return when events were published after :attr:`generation` was ``since``, or when
        ``timeout`` passes, whichever comes first."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.generation != since), timeout)
            except TimeoutError:
                pass
