"""Every operation of the REST API, fuzzed from its OpenAPI schema with schemathesis against a
live server as the admin: whatever the input, the answer is never a server error (5xx).

The operations are generated at collection, from the schema of the same app factory the server
runs (a test checks the live server serves exactly that schema); every request goes to the live
server. Operations with a path parameter are fuzzed twice: with generated names (which name
nothing, so most answers are 404) and with the names of real objects — a ticket with a ready
workspace, its project, the git token, the admin — so that bodies and query parameters reach
the code behind the lookup. Examples per operation are bounded and derandomized: the module
takes about a minute on two CPUs, and a failure reproduces.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from taskspace.settings import Settings
from taskspace.web.app import create_app
from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

EXAMPLES_PER_OPERATION = 20
#: (operation, status) of every answer, to show the run reached every handler.
ANSWERS: Counter[tuple[str, int]] = Counter()
#: Made by the ``real_objects`` fixture on a fresh server, so their names are known here.
REAL = {"project": "fuzzed", "ticket": "FUZZ-1", "token": "git", "user": "admin", "tracker": "builtin"}


def served_schema() -> dict[str, Any]:
    """The OpenAPI schema ``taskspace up`` serves, from the app factory (nothing is started)."""
    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(Settings(data_dir=Path(data_dir))).openapi()


def load(**config: Any) -> Any:
    return schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict({
        "seed": 20261121,
        "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "deterministic": True,
                       "database": "none"},
        "phases": {"coverage": {"enabled": True}, "stateful": {"enabled": False}},
        **config,
    }))


OPENAPI = served_schema()
# Left out because it would sabotage the run itself: revoking API tokens by id would revoke the
# admin token the run authenticates with (ids are small integers, the first a fuzzer tries); the
# bounds of its path parameter are covered in test_hostile_inputs.py. PATCH /users/{username}
# stays in: the one account the run uses cannot disable itself or drop its own admin role (409).
SABOTAGING = {"method": "DELETE", "path": "/api/v1/me/api-tokens/{token_id}"}

schema = load().exclude(**SABOTAGING)
about_real_objects = load(
    parameters={"path.key": REAL["ticket"], "path.name": REAL["token"], "path.username": REAL["user"],
                "path.tracker": REAL["tracker"], "path.project": REAL["project"],
                # A long poll would make each example last up to a minute; it is fuzzed above.
                "query.wait": 0},
    operations=[{"include-path-regex": r"^/api/v1/workspaces/\{ref\}", "parameters": {"path.ref": REAL["ticket"]}},
                {"include-path-regex": r"^/api/v1/projects/\{ref\}", "parameters": {"path.ref": REAL["project"]}}],
# Stopping or purging the workspace would leave the operations after them (exec, logs) nothing
# to work on; both are fuzzed with generated names above.
).include(path_regex=r"\{").exclude(**SABOTAGING).exclude(path_regex=r"/(stop|purge)$")


@pytest.fixture(scope="module")
def http(module_stack: Stack) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {module_stack.server.token}"
    return session


@pytest.fixture(scope="module")
def real_objects(module_stack: Stack) -> dict[str, str]:
    """The objects ``REAL`` names: a project with a ticket that has a ready workspace (the git
    token, the admin and the tracker exist already)."""
    response = module_stack.api("POST", "/projects", json={
        "name": REAL["project"], "key": "FUZZ", "repos": [module_stack.git.url(module_stack.primary)]})
    assert response.status_code == 201, response.text
    response = module_stack.api("POST", "/tickets", json={"project": REAL["project"], "title": "Fuzzed from inside"})
    assert response.status_code == 201 and response.json()["key"] == REAL["ticket"], response.text
    module_stack.launch_ready(REAL["ticket"])
    return REAL


FUZZ_SETTINGS = settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                HealthCheck.data_too_large])


def call(case: schemathesis.Case, stack: Stack, http: requests.Session) -> None:
    response = case.call(base_url=stack.server.url, session=http, timeout=90)
    ANSWERS[case.operation.label, response.status_code] += 1
    case.validate_response(response, checks=[not_a_server_error])


def test_the_live_server_serves_the_fuzzed_schema(module_stack: Stack) -> None:
    live = requests.get(f"{module_stack.server.url}/openapi.json", timeout=30).json()
    assert sorted(live["paths"]) == sorted(OPENAPI["paths"])
    assert live == OPENAPI


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_input_makes_the_server_fail(case: schemathesis.Case, module_stack: Stack,
                                        http: requests.Session) -> None:
    call(case, module_stack, http)


@about_real_objects.parametrize()
@FUZZ_SETTINGS
def test_no_input_about_a_real_object_makes_the_server_fail(
        case: schemathesis.Case, real_objects: dict[str, str], module_stack: Stack, http: requests.Session) -> None:
    call(case, module_stack, http)


def test_the_run_reached_every_operation_as_the_admin(module_stack: Stack) -> None:
    """Every operation answered (mostly 4xx, some 2xx: the requests got past authentication to
    the handlers), and nothing the fuzzer sent revoked or disabled the account it ran as."""
    if not ANSWERS:
        pytest.skip("checks the fuzz tests of this module: run it with them")
    answered = {label for label, _ in ANSWERS}
    assert answered == {result.ok().label for result in schema.get_all_operations()}
    assert sum(count for (_, status), count in ANSWERS.items() if 200 <= status < 300) > 0
    assert ANSWERS.total() > 20 * len(answered)
    reached = {label for (label, status), _ in ANSWERS.items() if 200 <= status < 300}
    assert {"GET /api/v1/workspaces/{ref}", "GET /api/v1/tickets/{key}", "GET /api/v1/projects/{ref}",
            "POST /api/v1/workspaces/{ref}/exec"} <= reached, "the real objects were fuzzed"
    response = module_stack.server.api.get("/me")
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
