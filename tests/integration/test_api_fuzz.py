"""Every operation of the REST API, fuzzed from its OpenAPI schema with schemathesis against a
live server as the admin: whatever the input, the answer is never a server error (5xx).

The operations are generated at collection, from the schema of the same app factory the server
runs (a test checks the live server serves exactly that schema); every request goes to the
live server. Operations that take a path parameter are fuzzed twice: with generated values
(which name nothing, so most answers are 404) and with the names of real objects — a ticket
with a ready workspace, the project, the git token, the admin — so the body and query reach
the code behind the lookup. Examples per operation are bounded and derandomized: the module
stays near a minute and a half on two CPUs, and a failure reproduces.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from taskspace.settings import Settings
from taskspace.web.app import create_app
from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

EXAMPLES_PER_OPERATION = 25
FUZZ_SETTINGS = settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                HealthCheck.data_too_large])
#: (operation, status) of every answer, to show the run reached every handler.
ANSWERS: Counter[tuple[str, int]] = Counter()


def served_schema() -> dict[str, Any]:
    """The OpenAPI schema ``taskspace up`` serves, from the app factory (nothing is started)."""
    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(Settings(data_dir=Path(data_dir))).openapi()


OPENAPI = served_schema()
API = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict({
    "seed": 20261121,
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "deterministic": True,
                   "database": "none"},
    "phases": {"coverage": {"enabled": True}, "stateful": {"enabled": False}},
}))

# Left out because it would sabotage the run itself: revoking API tokens by id would revoke the
# admin token the run authenticates with (ids are small integers, the first a fuzzer tries); the
# bounds of its path parameter are covered in test_hostile_inputs.py. PATCH /users/{username}
# stays in: the one account the run uses cannot disable itself or drop its own admin role (409).
SABOTAGING = {("DELETE", "/api/v1/me/api-tokens/{token_id}")}
schema = API
for _method, _path in SABOTAGING:
    schema = schema.exclude(method=_method, path=_path)

WITH_PATH_PARAMETERS = [(method.upper(), path) for path, operations in OPENAPI["paths"].items()
                        for method in operations if "{" in path and (method.upper(), path) not in SABOTAGING]


@pytest.fixture(scope="module")
def http(module_stack: Stack) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {module_stack.server.token}"
    return session


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


@pytest.fixture(scope="module")
def real_objects(module_stack: Stack) -> dict[str, str]:
    """Names of real objects: a ticket with a ready workspace, the project, the git token (the
    stack's ``git``), the admin, the built-in tracker."""
    key = module_stack.ticket("Fuzzed from the inside")
    module_stack.launch_ready(key)
    return {"ticket": key, "project": module_stack.project, "name": "git", "username": "admin",
            "tracker": "builtin"}


def real_path_parameters(path: str, real: dict[str, str]) -> dict[str, str]:
    values = {"key": real["ticket"], "name": real["name"], "username": real["username"],
              "tracker": real["tracker"], "project": real["project"],
              "ref": real["ticket"] if path.startswith("/api/v1/workspaces/") else real["project"]}
    return {name: values[name] for name in re.findall(r"{(\w+)}", path) if name in values}


@pytest.mark.parametrize(("method", "path"), WITH_PATH_PARAMETERS, ids=[f"{m} {p}" for m, p in WITH_PATH_PARAMETERS])
def test_no_input_about_a_real_object_makes_the_server_fail(
        method: str, path: str, real_objects: dict[str, str], module_stack: Stack, http: requests.Session) -> None:
    operation = API[path][method]
    fixed = {"path_parameters": real_path_parameters(path, real_objects)}
    if any(p.get("name") == "wait" and p.get("in") == "query" for p in OPENAPI["paths"][path][method.lower()]
           .get("parameters", [])):
        fixed["query"] = {"wait": 0}  # a long poll would make each example last up to a minute
    cases = st.one_of(operation.as_strategy(mode, **fixed)  # type: ignore[arg-type]
                      for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE))

    @given(case=cases)
    @FUZZ_SETTINGS
    def run(case: schemathesis.Case) -> None:
        call(case, module_stack, http)

    run()


def test_the_run_reached_every_operation_as_the_admin(module_stack: Stack) -> None:
    """Every operation answered (most with 4xx, some with 2xx: the requests got past
    authentication to the handlers), and nothing the fuzzer sent revoked or disabled the
    account it ran as."""
    if not ANSWERS:
        pytest.skip("checks the fuzz tests of this module: run it with them")
    answered = {label for label, _ in ANSWERS}
    assert answered == {operation.ok().label for operation in schema.get_all_operations()}
    assert sum(count for (_, status), count in ANSWERS.items() if 200 <= status < 300) > 0
    assert ANSWERS.total() > 20 * len(answered)
    response = module_stack.server.api.get("/me")
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
