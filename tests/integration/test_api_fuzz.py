"""Every operation of the REST API, fuzzed from its OpenAPI schema with schemathesis against a
live server as the admin: whatever the input, the answer is never a server error (5xx).

The operations are generated at collection, from the schema of the same app factory the server
runs (a test checks the live server serves exactly that schema); every request goes to the
live server. Examples per operation are bounded and derandomized: the module stays near a
minute on two CPUs, and a failure reproduces.
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

EXAMPLES_PER_OPERATION = 25
#: (operation, status) of every answer, to show the run reached the handlers.
ANSWERS: Counter[tuple[str, int]] = Counter()


def served_schema() -> dict[str, Any]:
    """The OpenAPI schema ``taskspace up`` serves, from the app factory (nothing is started)."""
    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(Settings(data_dir=Path(data_dir))).openapi()


OPENAPI = served_schema()
schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict({
    "seed": 20261121,
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "deterministic": True,
                   "database": "none"},
    "phases": {"coverage": {"enabled": True}, "stateful": {"enabled": False}},
}))

# Left out because they would sabotage the run itself: revoking API tokens by id would revoke
# the admin token the run authenticates with (ids are small integers, the first a fuzzer tries);
# the bounds of its path parameter are covered in test_hostile_inputs.py. PATCH /users/{username}
# stays in: the one account the run uses cannot disable itself or drop its own admin role (409).
schema = schema.exclude(method="DELETE", path="/api/v1/me/api-tokens/{token_id}")


@pytest.fixture(scope="module")
def http(module_stack: Stack) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {module_stack.server.token}"
    return session


def test_the_live_server_serves_the_fuzzed_schema(module_stack: Stack) -> None:
    live = requests.get(f"{module_stack.server.url}/openapi.json", timeout=30).json()
    assert live["paths"].keys() == OPENAPI["paths"].keys()
    assert live == OPENAPI


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_input_makes_the_server_fail(case: schemathesis.Case, module_stack: Stack,
                                        http: requests.Session) -> None:
    response = case.call(base_url=module_stack.server.url, session=http, timeout=90)
    ANSWERS[case.operation.label, response.status_code] += 1
    case.validate_response(response, checks=[not_a_server_error])


def test_the_run_reached_every_operation_as_the_admin(module_stack: Stack) -> None:
    """The fuzzer's requests got past authentication to the handlers, and nothing it sent
    revoked or disabled the account it ran as."""
    operations = {label for label, _ in ANSWERS}
    assert len(operations) == len(list(schema.get_all_operations()))
    import sys; print(sorted(ANSWERS.items()), file=sys.stderr)
    response = module_stack.server.api.get("/me")
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
