"""First start of an installation: the admin, its local API token, the demo project."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taskspace.db.engine import transaction
from taskspace.services import demo, users
from taskspace.services.runtime import Runtime

ADMIN_TOKEN_FILE = "admin.token"
INITIAL_PASSWORD_FILE = "initial-admin-password"


@dataclass
class BootstrapReport:
    admin: str
    token_file: Path
    demo_seeded: bool
    password_file: Path | None = None
    password: str | None = None


def admin_token_path(data_dir: Path) -> Path:
    return data_dir / ADMIN_TOKEN_FILE


async def bootstrap(rt: Runtime, *, with_demo: bool, say: Callable[[str], None]) -> BootstrapReport:
    """Check the engine answers, create the admin on an empty database and (re)write its local
    token when the file is missing; seed the demo on an empty database unless ``with_demo`` is
    false. Raises BackendError when the engine cannot be reached."""
    await rt.backend.list_owned()  # fails early, with a hint, when the engine is unreachable
    path = admin_token_path(rt.settings.data_dir)
    password_file = None
    async with transaction(rt.sessions) as session:
        admin, password = await users.ensure_admin(session=session)
        if password is not None:
            password_file = rt.settings.data_dir / INITIAL_PASSWORD_FILE
            _write_private(password_file, password)
        if not path.exists():
            token, _ = await users.create_api_token(session=session, user=admin, name="local admin")
            _write_private(path, token)
    seeded = False
    if with_demo:
        seeded = await demo.seed(rt, admin=admin, say=say) is not None
    return BootstrapReport(admin=admin.username, token_file=path, demo_seeded=seeded, password_file=password_file,
                           password=password)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
