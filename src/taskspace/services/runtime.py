"""What the use-cases need, built once at start-up and passed in explicitly."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from taskspace.core.redaction import SecretRedactor
from taskspace.db import migrate
from taskspace.db.engine import create_engine, create_sessionmaker, transaction
from taskspace.db.models import Meta
from taskspace.gitops.mirrors import Mirrors
from taskspace.plugins.backends.base import Backend
from taskspace.plugins.registry import load_backend
from taskspace.services.bus import Bus
from taskspace.services.vault import Vault, new_key_line
from taskspace.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    readers: async_sessionmaker[AsyncSession]
    backend: Backend
    mirrors: Mirrors
    vault: Vault
    installation: str
    bus: Bus = field(default_factory=Bus)
    redactor: SecretRedactor = field(default_factory=SecretRedactor)
    #: Identifies this process as a lease holder: host name and pid.
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    #: Held by the page or listing being computed, when the database is SQLite (see ``turn``).
    turns: asyncio.Semaphore | None = None

    def turn(self) -> AbstractAsyncContextManager[object]:
        """Hold while computing a page or listing from the database, with nothing else in
        between (no engine, git or tracker call). On SQLite that is all this process's own
        work, and pages computed interleaved all finish late: eight at once take about eight
        times one's time each. Taking turns in the order they came, they are served as many
        per second and the slowest waits far less (measured: the board's p95 under eight
        connections, 115 ms interleaved, 70 ms in turn). A database server works elsewhere
        while a page waits for it: no turns there."""
        return self.turns if self.turns is not None else nullcontext()

    async def close(self) -> None:
        await self.mirrors.aclose()
        await self.engine.dispose()


async def installation_id(sessions: async_sessionmaker[AsyncSession]) -> str:
    """The id that labels this installation's engine resources, created on first start."""
    async with transaction(sessions) as session:
        row = await session.get(Meta, "installation")
        if row is None:
            row = Meta(key="installation", value=secrets.token_hex(4))
            session.add(row)
        return row.value


def backend_config(settings: Settings, backend_cls: type[Backend]) -> dict[str, object]:
    if backend_cls.name == "docker":
        return {"base_url": settings.docker_host, "build_timeout": settings.build_timeout,
                "build_network": settings.build_network,
                "registry_auth": {host: cred.model_dump() for host, cred in settings.registry_auth.items()}}
    return {}


def open_vault(settings: Settings) -> Vault:
    """The token vault: keys from TASKSPACE_SECRET_KEY, else the key file (made on first start)."""
    if settings.secret_key is not None:
        return Vault(text=settings.secret_key.get_secret_value())
    path = settings.vault_key_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_key_line() + "\n")
    return Vault(key_file=path)


async def build_runtime(settings: Settings) -> Runtime:
    """Prepare the data dir, migrate the database and wire the plugins. Opens no engine connection."""
    settings.ensure_data_dir()
    engine = create_engine(settings.sqlalchemy_url)
    await migrate.upgrade(engine)
    sessions = create_sessionmaker(engine)
    installation = await installation_id(sessions)
    backend_cls = load_backend(settings.backend)
    config = backend_cls.config_model(**backend_config(settings, backend_cls))
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        readers=create_sessionmaker(engine, readonly=True),
        backend=backend_cls(config, installation=installation),
        mirrors=Mirrors(settings.mirrors_dir),
        vault=open_vault(settings),
        installation=installation,
        turns=asyncio.Semaphore(1) if engine.dialect.name == "sqlite" else None,
    )
