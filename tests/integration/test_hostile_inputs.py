import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

def test_dbg(module_stack: Stack) -> None:
    key = module_stack.ticket()
    module_stack.launch(key)
    ws = module_stack.server.wait_for(key, {"ready", "failed"})
    print("STATE", ws["state"], ws["failure_step"], ws["failure_reason"])
    assert 0
