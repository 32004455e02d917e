"""strategy.v1.validate: compile and policy check without running anything."""

from contracts import subjects
from tests.support import request_json


async def test_valid_function_strategy_reports_style_and_imports(nc):
    reply = await request_json(nc, subjects.VALIDATE, {"code": "import numpy as np\ndef strategy(data):\n    return 'BUY'\n"})
    assert reply["valid"] is True
    assert reply["style"] == "function"
    assert reply["imports"] == ["numpy"]


async def test_script_style_is_recognised(nc):
    reply = await request_json(nc, subjects.VALIDATE, {"code": "signal('BUY')\n"})
    assert reply["valid"] is True
    assert reply["style"] == "script"


async def test_forbidden_import_is_a_security_violation_with_line(nc):
    reply = await request_json(nc, subjects.VALIDATE, {"code": "x = 1\nimport os\n"})
    assert reply["valid"] is False
    assert reply["error"]["code"] == "SECURITY_VIOLATION"
    assert reply["error"]["line"] == 2


async def test_syntax_error_is_a_compile_error(nc):
    reply = await request_json(nc, subjects.VALIDATE, {"code": "def strategy(:\n"})
    assert reply["error"]["code"] == "COMPILE_ERROR"


async def test_validate_never_runs_the_code(nc):
    reply = await request_json(nc, subjects.VALIDATE, {"code": "while True:\n    pass\n"})
    assert reply["valid"] is True
