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


@dataclass
class BootstrapReport:
    admin: str
    token_file: Path
    demo_seeded: bool


def admin_token_path(data_dir: Path) -> Path:
    return data_dir / ADMIN_TOKEN_FILE


async def bootstrap(rt: Runtime, *, with_demo: bool, say: Callable[[str], None]) -> BootstrapReport:
    """Check the engine answers, create the admin on an empty database and (re)write its local
    token when the file is missing; seed the demo on an empty database unless ``with_demo`` is
    false. Raises BackendError when the engine cannot be reached."""
    await rt.backend.list_owned()  # fails early, with a hint, when the engine is unreachable
    path = admin_token_path(rt.settings.data_dir)
    async with transaction(rt.sessions) as session:
        admin = await users.ensure_admin(session=session)
        if not path.exists():
            token = await users.create_api_token(session=session, user=admin, name="local admin")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
    seeded = False
    if with_demo:
        seeded = await demo.seed(rt, admin=admin, say=say) is not None
    return BootstrapReport(admin=admin.username, token_file=path, demo_seeded=seeded)
