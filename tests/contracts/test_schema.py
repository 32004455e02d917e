"""The committed JSON Schemas are exactly what the Structs generate."""

import json

import jsonschema
import pytest

from contracts.schema import MESSAGES, SCHEMA_DIR, render
from tests.support import columnar_bars, row_bars


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_committed_schema_matches_the_structs(name):
    committed = (SCHEMA_DIR / f"{name}.json").read_text()
    assert committed == render(name), f"run `python -m contracts.schema` to refresh {name}.json"


def test_no_stray_schema_files():
    assert {p.stem for p in SCHEMA_DIR.glob("*.json")} == set(MESSAGES)


def test_schema_accepts_a_row_format_request_and_rejects_a_bad_one():
    schema = json.loads((SCHEMA_DIR / "ExecuteRequest.json").read_text())
    jsonschema.validate({"code": "x", "market_data": row_bars(3), "user_id": "u"}, schema)
    jsonschema.validate({"code": "x", "bars": columnar_bars(3)}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"code": 5}, schema)
