"""Signing in (password and OpenID Connect), sessions and CSRF, roles on every route, the audit
log, and rotating the vault's key under a running server."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey
from typer.testing import CliRunner

from taskspace.cli.main import app as cli
from taskspace.testing.oidc_provider import OidcProvider
from tests.integration.conftest import Stack, StackFactory

pytestmark = pytest.mark.docker


def browser(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.server.url, follow_redirects=False, timeout=30)


def attempt(client: httpx.Client, username: str, password: str) -> httpx.Response:
    """Fill in the sign-in form as served (each form carries a fresh token)."""
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return client.post("/login", data={"username": username, "password": password, "login_token": token,
                                       "next": "/"})


def sign_in(stack: Stack, username: str, password: str) -> httpx.Client:
    client = browser(stack)
    response = attempt(client, username, password)
    assert response.status_code == 303, response.text
    return client


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/")
    return json.loads(re.search(r"hx-headers='([^']+)'", page.text).group(1))["X-CSRF-Token"]  # type: ignore[union-attr]


def test_password_sign_in_sessions_and_csrf(stack: Stack) -> None:
    password = (stack.server.data_dir / "initial-admin-password").read_text().strip()
    assert "Sign in at" in stack.server.log() and "initial-admin-password" in stack.server.log()

    # A wrong password and an unknown user get the same answer.
    client = browser(stack)
    for user, pw in (("admin", "not-the-password"), ("nobody", password)):
        wrong = attempt(client, user, pw)
        assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    forged = browser(stack).post("/login", data={"username": "admin", "password": password, "login_token": "x"})
    assert forged.status_code == 403, "a sign-in form not served by taskspace is refused"

    client = sign_in(stack, "admin", password)
    cookie = next(c for c in client.cookies.jar if c.name == "taskspace_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/"
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/me").json()["role"] == "admin"

    # A state-changing request with the cookie but no CSRF token is refused.
    refused = client.post("/api/v1/me/api-tokens", json={"name": "laptop"})
    assert refused.status_code == 403 and "Reload the page" in refused.json()["error"]["hint"]
    created = client.post("/api/v1/me/api-tokens", json={"name": "laptop"}, headers={"X-CSRF-Token": csrf_of(client)})
    assert created.status_code == 201
    api_token = created.json()["token"]
    assert stack.api("GET", "/me/api-tokens").status_code == 200
    assert httpx.get(f"{stack.server.url}/api/v1/me", headers={"Authorization": f"Bearer {api_token}"}).json()[
        "username"] == "admin"

    # Signing out ends the session on the server, not just in the browser.
    old = client.cookies.get("taskspace_session")
    out = client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert httpx.get(f"{stack.server.url}/api/v1/me", cookies={"taskspace_session": old}).status_code == 401
    assert browser(stack).get("/").headers["location"].startswith("/login")

    # A revoked API token stops working.
    token_id = created.json()["id"]
    revoke = httpx.delete(f"{stack.server.url}/api/v1/me/api-tokens/{token_id}",
                          headers={"Authorization": f"Bearer {api_token}"})
    assert revoke.status_code == 204
    assert httpx.get(f"{stack.server.url}/api/v1/me", headers={"Authorization": f"Bearer {api_token}"}
                     ).status_code == 401

    # A disabled account cannot sign in.
    stack.api("POST", "/users", json={"username": "erin", "password": "erin-password-1"})
    sign_in(stack, "erin", "erin-password-1")
    stack.api("PATCH", "/users/erin", json={"disabled": True})
    assert attempt(browser(stack), "erin", "erin-password-1").status_code == 401


def _oidc_login(stack: Stack, *, tamper_state: bool = False) -> httpx.Response:
    client = browser(stack)
    start = client.get("/login/oidc", params={"next": "/me"})
    assert start.status_code == 302, start.text
    authorize = httpx.get(start.headers["location"], follow_redirects=False)
    assert authorize.status_code == 302, authorize.text
    callback = authorize.headers["location"]
    if tamper_state:
        callback = re.sub(r"state=[^&]+", "state=forged", callback)
    return client.get(callback.removeprefix(stack.server.url))


def test_single_sign_on_with_openid_connect(make_stack: StackFactory) -> None:
    with OidcProvider() as provider:
        stack = make_stack(start=False, env={
            "TASKSPACE_OIDC_ISSUER": provider.issuer, "TASKSPACE_OIDC_CLIENT_ID": provider.client_id,
            "TASKSPACE_OIDC_CLIENT_SECRET": provider.client_secret,
            "TASKSPACE_OIDC_ROLE_MAP": json.dumps({"platform-admins": "admin", "leads": "reviewer"})})
        provider.redirect_uris.append(f"{stack.server.url}/auth/oidc/callback")
        stack.server.start()

        provider.user = {"sub": "abc-1", "preferred_username": "dana", "email": "dana@example.com",
                         "name": "Dana Scully", "groups": ["leads"]}
        response = _oidc_login(stack)
        assert response.status_code == 303 and response.headers["location"] == "/me"
        session = response.cookies.get("taskspace_session")
        me = httpx.get(f"{stack.server.url}/api/v1/me", cookies={"taskspace_session": session}).json()
        assert me == {"username": "dana", "display_name": "Dana Scully", "email": "dana@example.com",
                      "role": "reviewer"}
        assert provider.token_requests == 1, "the code was exchanged at the provider, with PKCE"

        # The role follows the groups at every sign-in; the account is the same (by subject).
        provider.user = {**provider.user, "groups": ["platform-admins"], "preferred_username": "renamed"}
        response = _oidc_login(stack)
        session = response.cookies.get("taskspace_session")
        me = httpx.get(f"{stack.server.url}/api/v1/me", cookies={"taskspace_session": session}).json()
        assert (me["username"], me["role"]) == ("dana", "admin")

        # A forged state and an ID token signed with a key the provider does not publish are refused.
        assert _oidc_login(stack, tamper_state=True).status_code == 401
        provider.signing_key = RSAKey.generate_key(2048, parameters={"kid": provider.key.kid})
        refused = _oidc_login(stack)
        assert refused.status_code == 401 and "taskspace_session" not in refused.cookies
        audit = stack.api("GET", "/audit", params={"action": "GET oidc_callback"}).json()
        assert [a["result"] for a in audit][:2] == ["denied", "denied"]


# Roles and ownership ---------------------------------------------------------------------------

#: Every operation of the API, and who may do it to a workspace, token or account of someone else.
#:   theirs   — addresses the first user's resource: another developer gets 403 or 404
#:   admin    — admins only: a developer gets 403
#:   own      — acts on the caller's own data or on shared data: allowed, and shows nothing of the first user's
#:   signed   — a tracker's webhook: refused without the tracker's secret, whoever calls
OPERATIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/health"): "own",
    ("GET", "/api/v1/me"): "own",
    ("POST", "/api/v1/me/password"): "own",
    ("GET", "/api/v1/me/api-tokens"): "own",
    ("POST", "/api/v1/me/api-tokens"): "own",
    ("DELETE", "/api/v1/me/api-tokens/{token_id}"): "theirs",
    ("GET", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("PATCH", "/api/v1/users/{username}"): "admin",
    ("GET", "/api/v1/audit"): "admin",
    ("GET", "/api/v1/audit.csv"): "admin",
    ("POST", "/api/v1/reconcile"): "admin",
    ("GET", "/api/v1/projects"): "own",
    ("POST", "/api/v1/projects"): "admin",
    ("GET", "/api/v1/projects/{ref}"): "own",
    ("PATCH", "/api/v1/projects/{ref}"): "admin",
    ("POST", "/api/v1/projects/{ref}/sync"): "admin",
    ("GET", "/api/v1/policy/preview"): "own",
    ("GET", "/api/v1/analytics/workspaces"): "own",
    ("GET", "/api/v1/analytics/workspaces.csv"): "own",
    ("GET", "/api/v1/analytics/summary"): "own",
    ("GET", "/api/v1/analytics/summary.csv"): "own",
    ("POST", "/hooks/{tracker}"): "signed",
    ("POST", "/hooks/{tracker}/{project}"): "signed",
    ("GET", "/api/v1/tokens"): "own",
    ("POST", "/api/v1/tokens"): "own",
    ("DELETE", "/api/v1/tokens/{name}"): "theirs",
    ("GET", "/api/v1/tickets"): "own",
    ("POST", "/api/v1/tickets"): "own",
    ("GET", "/api/v1/tickets/{key}"): "own",
    ("POST", "/api/v1/tickets/{key}/move"): "own",
    ("GET", "/api/v1/workspaces"): "own",
    ("POST", "/api/v1/workspaces"): "own",
    ("GET", "/api/v1/workspaces/{ref}"): "theirs",
    ("GET", "/api/v1/workspaces/{ref}/events"): "theirs",
    ("POST", "/api/v1/workspaces/{ref}/exec"): "theirs",
    ("GET", "/api/v1/workspaces/{ref}/logs/build"): "theirs",
    ("GET", "/api/v1/workspaces/{ref}/logs/startup"): "theirs",
    ("POST", "/api/v1/workspaces/{ref}/purge"): "theirs",
    ("POST", "/api/v1/workspaces/{ref}/start"): "theirs",
    ("POST", "/api/v1/workspaces/{ref}/stop"): "theirs",
}

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/me/password"): {"current": "wrong-password-x", "new": "another-password-1"},
    ("POST", "/api/v1/me/api-tokens"): {"name": "mine"},
    ("POST", "/api/v1/users"): {"username": "mallory", "password": "mallory-password"},
    ("PATCH", "/api/v1/users/{username}"): {"role": "admin"},
    ("POST", "/api/v1/projects"): {"name": "sneaky", "repos": ["https://example.com/x.git"]},
    ("PATCH", "/api/v1/projects/{ref}"): {"warm_pool": 2},
    ("POST", "/hooks/{tracker}"): {"object_kind": "issue"},
    ("POST", "/hooks/{tracker}/{project}"): {"object_kind": "issue"},
    ("POST", "/api/v1/tokens"): {"name": "mine", "host": "example.com", "secret": "s3cret-value"},
    ("POST", "/api/v1/workspaces/{ref}/exec"): {"argv": ["id"]},
    ("POST", "/api/v1/workspaces/{ref}/purge"): {"discard_unpushed": True},
}


def _token_for(stack: Stack, username: str, role: str) -> str:
    password = f"{username}-password-1"
    assert stack.api("POST", "/users", json={"username": username, "password": password, "role": role}
                     ).status_code == 201
    client = sign_in(stack, username, password)
    created = client.post("/api/v1/me/api-tokens", json={"name": "test"}, headers={"X-CSRF-Token": csrf_of(client)})
    return created.json()["token"]


def test_every_route_checks_who_may_act_on_what(stack: Stack) -> None:
    schema = httpx.get(f"{stack.server.url}/openapi.json").json()
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    assert operations == set(OPERATIONS), "classify every new route here"

    alice = _token_for(stack, "alice", "developer")
    mallory = _token_for(stack, "mallory2", "developer")
    reviewer = _token_for(stack, "rita", "reviewer")

    def call(token: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, f"{stack.server.url}{path}", json=body, timeout=120,
                             headers={"Authorization": f"Bearer {token}"})

    # Alice's things: a git token, an API token and a ready workspace.
    host = stack.git.base_url.removeprefix("http://")
    assert call(alice, "POST", "/api/v1/tokens", {"name": "git", "host": host, "username": "alice",
                                                  "secret": stack.git_secret}).status_code == 201
    key = stack.ticket()
    ws = call(alice, "POST", "/api/v1/workspaces", {"key": key}).json()
    alice_token_id = call(alice, "GET", "/api/v1/me/api-tokens").json()[0]["id"]
    params = {"ref": ws["id"], "token_id": str(alice_token_id), "name": "git", "username": "alice",
              "key": key, "project": stack.project, "tracker": "gitlab"}

    for (method, template), rule in sorted(OPERATIONS.items()):
        path = template.replace("{ref}", stack.project if "/projects/" in template else params["ref"])
        for name, value in params.items():
            path = path.replace("{" + name + "}", value)
        response = call(mallory, method, path, BODIES.get((method, template)))
        where = f"{method} {template} as another developer"
        if rule == "theirs":
            assert response.status_code in (403, 404), f"{where}: {response.status_code} {response.text[:200]}"
        elif rule == "admin":
            assert response.status_code == 403, f"{where}: {response.status_code} {response.text[:200]}"
        elif rule == "signed":
            assert response.status_code in (401, 403, 404), f"{where}: {response.status_code} {response.text[:200]}"
        else:
            assert response.status_code < 500, f"{where}: {response.status_code}"
            assert ws["id"] not in response.text and stack.git_secret not in response.text, where

    # Alice's things are untouched, and her token still works.
    assert call(alice, "GET", f"/api/v1/workspaces/{ws['id']}").json()["desired"] == "ready"
    assert [t["name"] for t in call(alice, "GET", "/api/v1/tokens").json()] == ["git"]
    assert stack.api("GET", f"/projects/{stack.project}").json()["warm_pool"] == 0

    # A reviewer reads anyone's workspace but may not act on it; an admin may stop it but not enter it.
    stack.server.wait_for(ws["id"], {"ready", "failed"})
    assert call(reviewer, "GET", f"/api/v1/workspaces/{ws['id']}").status_code == 200
    assert call(reviewer, "GET", "/api/v1/workspaces", None).status_code == 200
    assert ws["id"] in call(reviewer, "GET", "/api/v1/workspaces?everyone=true").text
    assert call(reviewer, "POST", f"/api/v1/workspaces/{ws['id']}/stop").status_code == 403
    assert call(reviewer, "POST", f"/api/v1/workspaces/{ws['id']}/exec", {"argv": ["id"]}).status_code == 403
    assert stack.api("POST", f"/workspaces/{ws['id']}/exec", json={"argv": ["id"]}).status_code == 403
    assert stack.api("POST", f"/workspaces/{ws['id']}/purge").status_code == 202
    assert stack.server.wait_for(ws["id"], {"purged", "purge_blocked"})["state"] == "purged"


def test_every_state_changing_action_is_in_the_audit_log(stack: Stack) -> None:
    key = stack.ticket("Audited")
    stack.api("POST", f"/tickets/{key}/move", json={"status": "In Progress"})
    stack.api("POST", "/projects", json={"name": "!!", "repos": []})
    rows = stack.api("GET", "/audit", params={"actor": "admin"}).json()
    actions = [(r["action"], r["target"], r["result"], r["status_code"]) for r in rows]
    assert ("POST move_ticket", f"key={key}", "ok", 200) in actions
    assert ("POST create_project", None, "refused", 422) in actions
    assert all(r["source"] == "127.0.0.1" for r in rows)
    csv = stack.api("GET", "/audit.csv", params={"action": "POST move"}).text
    assert csv.splitlines()[0] == "at,actor,action,target,source,result,status"
    assert f"key={key}" in csv and "create_project" not in csv
    anonymous = httpx.post(f"{stack.server.url}/api/v1/tickets", json={"project": stack.project, "title": "x"})
    assert anonymous.status_code == 401
    denied = stack.api("GET", "/audit", params={"actor": "anonymous"}).json()
    assert denied[0]["action"] == "POST create_ticket" and denied[0]["result"] == "denied"


def test_rotating_the_vault_key_under_a_running_server(stack: Stack) -> None:
    env = {**stack.server.cli_env(), "TASKSPACE_CONFIG": str(stack.server.data_dir / "none.toml")}
    key_file = stack.server.data_dir / "secret.key"
    old_key = key_file.read_text().split()[0]

    result = CliRunner().invoke(cli, ["admin", "rotate-key"], env=env)
    assert result.exit_code == 0, result.output
    assert "re-wrapped 1 token(s)" in result.stdout
    new_key = key_file.read_text().split()[0]
    assert new_key != old_key and old_key in key_file.read_text(), "the old key stays for readers"

    # The running server re-reads the key file: its launches still open the token.
    key = stack.ticket("After rotation")
    assert stack.launch_ready(key)["state"] == "ready"
    result = CliRunner().invoke(cli, ["admin", "rotate-key", "--rewrap-only", "--prune"], env=env)
    assert result.exit_code == 0, result.output
    assert f"Dropped unused key(s): {old_key}" in result.stdout
    assert old_key not in key_file.read_text()
    stack.request(key, "purge", "purged")
    key = stack.ticket("After pruning")
    assert stack.launch_ready(key)["state"] == "ready"
    stack.request(key, "purge", "purged")
