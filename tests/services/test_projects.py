"""Projects: validated input, every repository probed with the caller's token, all or nothing."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from taskspace.core.errors import Conflict, GitError, InvalidInput
from taskspace.db.engine import transaction
from taskspace.db.models import GitToken, Project, Repo, User
from taskspace.gitops.seed import create_bare_repo
from taskspace.services import git_tokens, projects
from taskspace.services.projects import ProjectInput
from taskspace.services.runtime import Runtime
from taskspace.testing.git_server import GitHttpServer
from tests.services.support import DOCKERFILE, NewRepo, count

pytestmark = pytest.mark.usefixtures("git_token")


@pytest.fixture
def api_url(new_repo: NewRepo) -> str:
    return new_repo({"Dockerfile": DOCKERFILE, "README.md": "api\n"})


@pytest.fixture
def web_url(new_repo: NewRepo) -> str:
    return new_repo({"index.html": "<h1>web</h1>\n"}, branch="trunk")


async def stored(rt: Runtime, name: str) -> Project:
    async with transaction(rt.sessions) as session:
        return await projects.get(session=session, ref=name)


async def test_create_records_default_branches_and_the_primary(rt: Runtime, admin: User, api_url: str,
                                                               web_url: str) -> None:
    created = await projects.create(rt, user=admin, data=ProjectInput(name="payments", repos=[api_url, web_url]))

    project = await stored(rt, "payments")
    assert project.id == created.id
    assert (project.key, project.tracker, project.dockerfile) == ("PAYMENTS", "builtin", "Dockerfile")
    assert (project.purge_on_category, project.purge_on_statuses, project.purge_grace_seconds) == ("done", [], 0)
    assert [(r.name, r.url, r.default_branch, r.is_primary, r.position) for r in project.repos] == [
        (api_url.rsplit("/", 1)[1].removesuffix(".git"), api_url, "main", True, 0),
        (web_url.rsplit("/", 1)[1].removesuffix(".git"), web_url, "trunk", False, 1),
    ]
    assert (await stored(rt, "PAYMENTS")).id == project.id  # found by key too


async def test_name_equals_url_chooses_the_directory_name(rt: Runtime, admin: User, api_url: str,
                                                          web_url: str) -> None:
    await projects.create(rt, user=admin, data=ProjectInput(
        name="shop", key="SHOP", repos=[f"backend={api_url}", f"frontend={web_url}"], purge_on=["in review"],
        purge_on_category=None, grace_seconds=90))

    project = await stored(rt, "shop")
    assert [(r.name, r.url) for r in project.repos] == [("backend", api_url), ("frontend", web_url)]
    assert (project.purge_on_statuses, project.purge_on_category, project.purge_grace_seconds) == (
        ["In Review"], None, 90)


async def test_file_repositories_under_an_allowed_root_need_no_token(rt: Runtime, admin: User,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "repos" / "local.git"
    create_bare_repo(path, {"Dockerfile": DOCKERFILE}, branch="develop")

    await projects.create(rt, user=admin, data=ProjectInput(name="local", repos=[f"file://{path}"]))

    project = await stored(rt, "local")
    assert [(r.name, r.default_branch) for r in project.repos] == [("local", "develop")]


async def test_a_second_project_with_the_same_name_or_key_conflicts(rt: Runtime, admin: User, api_url: str) -> None:
    await projects.create(rt, user=admin, data=ProjectInput(name="payments", key="PAY", repos=[api_url]))

    with pytest.raises(Conflict, match="exists already"):
        await projects.create(rt, user=admin, data=ProjectInput(name="payments", key="OTHER", repos=[api_url]))
    with pytest.raises(Conflict, match="exists already"):
        await projects.create(rt, user=admin, data=ProjectInput(name="other", key="PAY", repos=[api_url]))
    assert await count(rt, Project) == 1


async def test_invalid_input_creates_nothing(rt: Runtime, admin: User, api_url: str, web_url: str,
                                             git_server: GitHttpServer) -> None:
    team_a, team_b = f"{git_server.base_url}/team-a/api.git", f"{git_server.base_url}/team-b/api.git"
    cases: list[tuple[ProjectInput, str, str]] = [
        (ProjectInput(name="bad name!", repos=[api_url]), "name", "not a valid project name"),
        (ProjectInput(name="-leading-dash", repos=[api_url]), "name", "not a valid project name"),
        (ProjectInput(name="fine", key="lower", repos=[api_url]), "key", "not a valid project key"),
        (ProjectInput(name="42", repos=[api_url]), "key", "not a valid project key"),
        (ProjectInput(name="fine", repos=[]), "repos", "at least one repository"),
        (ProjectInput(name="fine", repos=[team_a, team_b]), "repos", "would both be cloned to /workspace/api"),
        (ProjectInput(name="fine", repos=[f"x={api_url}", f"x={web_url}"]), "repos", "would both be cloned"),
        (ProjectInput(name="fine", repos=[f"{web_url.rsplit('/', 1)[1][:-4]}={api_url}", web_url]), "repos",
         "would both be cloned"),
        (ProjectInput(name="fine", repos=[api_url], dockerfile="/Dockerfile"), "dockerfile",
         "not a Dockerfile path"),
        (ProjectInput(name="fine", repos=[api_url], dockerfile="../Dockerfile"), "dockerfile",
         "not a Dockerfile path"),
        (ProjectInput(name="fine", repos=[api_url], dockerfile="docker/../../x"), "dockerfile",
         "not a Dockerfile path"),
        (ProjectInput(name="fine", repos=[api_url], purge_on_category="closed"), "purge_on_category",
         "not a status category"),
    ]
    for data, field, message in cases:
        with pytest.raises(InvalidInput, match=message) as caught:
            await projects.create(rt, user=admin, data=data)
        assert caught.value.field == field, data
    assert await count(rt, Project) == 0
    assert await count(rt, Repo) == 0


async def test_an_unknown_purge_status_lists_the_statuses(rt: Runtime, admin: User, api_url: str) -> None:
    with pytest.raises(InvalidInput, match="'Closed' is not a status of the builtin tracker") as caught:
        await projects.create(rt, user=admin, data=ProjectInput(name="fine", repos=[api_url],
                                                                purge_on=["Done", "Closed"]))

    assert caught.value.field == "purge_on"
    assert caught.value.hint == "Statuses: To Do, In Progress, In Review, Done."
    assert await count(rt, Project) == 0


async def test_the_url_policy_is_enforced(rt: Runtime, admin: User, api_url: str, tmp_path: Path) -> None:
    cases = [
        ("http://git.example.com/team/api.git", "plain http sends tokens unencrypted"),
        ("https://user:pw@git.example.com/api.git", "it contains credentials"),
        ("file:///etc/api.git", "file:// repositories are not enabled for this path"),
        (f"file://{tmp_path}/data/api.git", "file:// repositories are not enabled for this path"),
        ("git://git.example.com/api.git", "unauthenticated and unencrypted"),
        ("ext::sh -c touch% /tmp/pwned", "git remote helpers"),
    ]
    for url, why in cases:
        with pytest.raises(InvalidInput, match="is not accepted") as caught:
            await projects.create(rt, user=admin, data=ProjectInput(name="fine", repos=[api_url, url]))
        assert caught.value.field == "url", url
        assert why in caught.value.message, url
    assert await count(rt, Project) == 0


async def test_a_repository_the_token_cannot_read_creates_nothing(rt: Runtime, admin: User, api_url: str,
                                                                  web_url: str) -> None:
    async with transaction(rt.sessions) as session:
        await git_tokens.remove(session=session, user=admin, name="local")
        await git_tokens.add(session=session, vault=rt.vault, user=admin, name="stale",
                             host=api_url.split("/")[2], username="alice", secret="not-the-password")

    with pytest.raises(GitError, match="authentication failed") as caught:
        await projects.create(rt, user=admin, data=ProjectInput(name="fine", repos=[api_url, web_url]))

    assert caught.value.message.startswith("Cannot read ")
    assert "not-the-password" not in str(caught.value)
    assert await count(rt, Project) == 0


async def test_a_repository_without_branches_creates_nothing(rt: Runtime, admin: User, api_url: str,
                                                             git_server: GitHttpServer) -> None:
    name = f"empty-{uuid.uuid4().hex[:8]}"
    subprocess.run(["git", "init", "--bare", "--quiet", str(git_server.repo_path(name))], check=True)

    with pytest.raises(InvalidInput, match="has no branches yet") as caught:
        await projects.create(rt, user=admin, data=ProjectInput(name="fine", repos=[api_url, git_server.url(name)]))

    assert caught.value.hint == "Push a first commit, then add the project."
    assert await count(rt, Project) == 0
    assert await count(rt, GitToken) == 1
