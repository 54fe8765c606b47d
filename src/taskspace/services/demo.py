"""The demo project seeded on an empty database: two local repositories, a Dockerfile that
builds without any registry, a dependency service, a startup script and three tickets."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable

from sqlalchemy import func, select

from taskspace.core.errors import BackendError
from taskspace.db.engine import transaction
from taskspace.db.models import Project, User
from taskspace.gitops.seed import create_bare_repo
from taskspace.plugins.backends.base import SupportsLocalBaseImage
from taskspace.services import projects, tickets
from taskspace.services.runtime import Runtime

FALLBACK_BASE = "debian:bookworm-slim"

TICKETS = [
    ("Add a health endpoint to the API",
     ("The load balancer needs `GET /health` to answer **200** with the build version.\n\n"
      "- [ ] route\n- [ ] test\n- [ ] document it in the README")),
    ("Show the cache status on the status page",
     ("The web page should say whether the cache service answers.\n\n"
      "The workspace gets `CACHE_HOST` and `CACHE_PORT` from `.taskspace/services.yaml`.")),
    ("Fix the greeting for names with accents",
     "`bin/hello Zoë` prints `Hello, Zo?`. It should print `Hello, Zoë!`."),
]


def _api_files(base_image: str, needs_git: bool) -> dict[str, str]:
    install = ("RUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates "
               "&& rm -rf /var/lib/apt/lists/*\n") if needs_git else ""
    return {
        "README.md": "# demo api\n\nA tiny service for trying taskspace. `bin/hello NAME` greets.\n",
        "Dockerfile": textwrap.dedent(f"""\
            # The workspace image: built by taskspace from this file, cached by its content.
            FROM {base_image}
            {install}RUN useradd --create-home --shell /bin/bash dev
            ENV EDITOR=vi
            WORKDIR /workspace
            USER dev
            """),
        "bin/hello": "#!/bin/sh\nprintf 'Hello, %s!\\n' \"${1:-world}\"\n",
        ".taskspace/startup.sh": textwrap.dedent("""\
            #!/bin/sh
            # Runs on every start of a workspace (keep it idempotent).
            set -e
            echo "Workspace for $TASKSPACE_TICKET on branch $TASKSPACE_BRANCH"
            ./bin/hello "$(id -un)"
            if perl -MIO::Socket::INET -e 'exit !IO::Socket::INET->new("$ENV{CACHE_HOST}:$ENV{CACHE_PORT}")'; then
              echo "cache reachable at $CACHE_HOST:$CACHE_PORT"
            fi
            """),
        ".taskspace/services.yaml": textwrap.dedent("""\
            # Dependencies started (and healthy) before the workspace's startup script runs.
            services:
              cache:
                build:
                  dockerfile: .taskspace/cache.Dockerfile
                  context: .taskspace
                ports: [6380]
                healthcheck:
                  test: perl -MIO::Socket::INET -e 'exit !IO::Socket::INET->new("127.0.0.1:6380")'
                  interval: 200ms
                  retries: 50
                publish:
                  CACHE_HOST: "${host}"
                  CACHE_PORT: "6380"
            """),
        ".taskspace/cache.Dockerfile": textwrap.dedent(f"""\
            FROM {base_image}
            COPY cache.pl /usr/local/bin/cache.pl
            CMD ["perl", "/usr/local/bin/cache.pl"]
            """),
        ".taskspace/cache.pl": textwrap.dedent("""\
            # A toy line-based key/value server: "SET k v", "GET k".
            use strict; use IO::Socket::INET;
            my %data;
            my $server = IO::Socket::INET->new(LocalPort => 6380, Listen => 16, ReuseAddr => 1) or die $!;
            while (my $client = $server->accept) {
                while (my $line = <$client>) {
                    my ($cmd, $key, $value) = split ' ', $line, 3;
                    if (uc($cmd // '') eq 'SET') { $data{$key} = $value; print $client "OK\\n" }
                    elsif (uc($cmd // '') eq 'GET') { print $client ($data{$key} // "\\n") }
                    else { print $client "ERR\\n" }
                }
            }
            """),
    }


WEB_FILES = {
    "README.md": "# demo web\n\nThe status page of the demo.\n",
    "index.html": "<!doctype html>\n<title>demo</title>\n<h1>Status</h1>\n<p id=\"cache\">unknown</p>\n",
}


async def _base_image(rt: Runtime, say: Callable[[str], None]) -> tuple[str, bool]:
    """A base image with git: built locally when the backend can, else Debian from a registry."""
    if isinstance(rt.backend, SupportsLocalBaseImage):
        say("Preparing the demo's base image from Debian packages (first start only, about a minute)...")
        try:
            return await rt.backend.ensure_local_base_image(say), False
        except BackendError as exc:
            say(f"{exc.message} Falling back to {FALLBACK_BASE} from a registry.")
    return FALLBACK_BASE, True


async def seed(rt: Runtime, *, admin: User, say: Callable[[str], None]) -> Project | None:
    """Create the demo project if the database has no project yet. Returns it, or None."""
    async with transaction(rt.sessions) as session:
        if await session.scalar(select(func.count()).select_from(Project)):
            return None
    base_image, needs_git = await _base_image(rt, say)
    root = rt.settings.data_dir / "demo" / "repos"
    api, web = root / "api.git", root / "web.git"
    for path, files, executable in ((api, _api_files(base_image, needs_git), ("bin/hello", ".taskspace/startup.sh")),
                                    (web, WEB_FILES, ())):
        if not path.exists():
            await asyncio.to_thread(create_bare_repo, path, files, executable=executable,
                                    message="Start of the demo")
    project = await projects.create(rt, user=admin, data=projects.ProjectInput(
        name="demo", key="DEMO", repos=[f"file://{api}", f"file://{web}"]))
    async with transaction(rt.sessions) as session:
        for title, description in TICKETS:
            await tickets.create(session=session, project=project, title=title, description=description,
                                 assignee=admin.username)
    say("Seeded the demo project DEMO with tickets DEMO-1, DEMO-2 and DEMO-3.")
    return project
