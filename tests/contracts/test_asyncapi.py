"""contracts/asyncapi.yaml is what the generator makes, covers every subject, and reads as YAML."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from contracts import ErrorCode, subjects
from contracts.asyncapi import ASYNCAPI_FILE, REQUEST_REPLY, build, render, request_subjects, to_yaml
from tests.support import columnar_bars


@pytest.fixture(scope="module")
def doc():
    return yaml.safe_load(ASYNCAPI_FILE.read_text(encoding="utf-8"))


def test_committed_file_matches_the_generator():
    committed = ASYNCAPI_FILE.read_text(encoding="utf-8")
    assert committed == render(), "run `python -m contracts.asyncapi` to refresh contracts/asyncapi.yaml"


def test_the_emitted_yaml_reads_back_as_the_document(doc):
    assert doc == json.loads(json.dumps(build()))


def test_every_subject_constant_has_a_request_reply_entry():
    missing = set(request_subjects()) - set(REQUEST_REPLY)
    assert not missing, f"add {sorted(missing)} to contracts.asyncapi.REQUEST_REPLY"


def _resolve(doc, ref: str):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_ref_resolves(doc):
    for ref in set(_refs(doc)):
        _resolve(doc, ref)


EXPECTED = {subjects.EXECUTE, subjects.VALIDATE, subjects.BACKTEST, subjects.HEALTH,
            subjects.HEALTH + ".{node_id}", "$SRV.PING", "$SRV.INFO", "$SRV.STATS",
            f"$SRV.PING.{subjects.SERVICE_NAME}", f"$SRV.INFO.{subjects.SERVICE_NAME}.{{service_id}}"}


def test_every_subject_is_a_channel_with_a_request_and_a_reply_schema(doc):
    assert doc["asyncapi"] == "3.0.0"
    by_address = {ch["address"]: name for name, ch in doc["channels"].items()}
    addresses = set(request_subjects().values()) | EXPECTED
    assert addresses <= set(by_address), addresses - set(by_address)
    operations = {op["channel"]["$ref"].rsplit("/", 1)[-1]: op for op in doc["operations"].values()}
    for address in addresses:
        channel = by_address[address]
        op = operations[channel]
        assert op["action"] == "receive"
        (request,) = op["messages"]
        assert request["$ref"].startswith(f"#/channels/{channel}/messages/")
        (reply,) = op["reply"]["messages"]
        assert op["reply"]["channel"]["$ref"] == "#/channels/inbox"
        assert reply["$ref"].startswith("#/channels/inbox/messages/")
        for ref, headers in ((request["$ref"], "RequestHeaders"), (reply["$ref"], "ReplyHeaders")):
            message = _resolve(doc, _resolve(doc, ref)["$ref"])
            assert "payload" in message
            assert message["headers"]["$ref"] == f"#/components/schemas/{headers}"
            if "$ref" in message["payload"]:
                _resolve(doc, message["payload"]["$ref"])
        if address.startswith(subjects.PREFIX + ".") and "{" not in address:
            assert op["bindings"]["nats"]["queue"] == subjects.QUEUE_GROUP
    assert doc["channels"]["inbox"]["address"] is None


def test_payloads_match_the_contract_types(doc):
    for const, (op_id, request, reply, _) in REQUEST_REPLY.items():
        if const == "HEALTH":
            continue
        op = doc["operations"][op_id]
        assert _message_payload(doc, op["messages"][0]) == {"$ref": f"#/components/schemas/{request.__name__}"}
        assert _message_payload(doc, op["reply"]["messages"][0]) == {"$ref": f"#/components/schemas/{reply.__name__}"}
    assert _message_payload(doc, doc["operations"]["health"]["reply"]["messages"][0]) == \
        {"$ref": "#/components/schemas/Health"}


def _message_payload(doc, ref):
    return _resolve(doc, _resolve(doc, ref["$ref"])["$ref"])["payload"]


def test_content_type_header_and_error_codes(doc):
    schemas = doc["components"]["schemas"]
    content_type = schemas["RequestHeaders"]["properties"][subjects.CONTENT_TYPE]
    assert content_type["enum"] == [subjects.JSON, subjects.MSGPACK]
    assert content_type["default"] == subjects.JSON == doc["defaultContentType"]
    assert "traceparent" in schemas["RequestHeaders"]["properties"]
    assert {"Nats-Service-Error", "Nats-Service-Error-Code"} <= set(schemas["ReplyHeaders"]["properties"])
    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}
    for code in ErrorCode:
        assert f"`{code.value}`" in doc["info"]["description"]


def test_component_schemas_validate_real_messages(doc):
    def validate(instance, name):
        jsonschema.validate(instance, {**doc, "$ref": f"#/components/schemas/{name}"},
                            cls=jsonschema.Draft202012Validator)

    validate({"code": "def strategy(d): return 'BUY'", "bars": columnar_bars(3), "user_id": "u"}, "ExecuteRequest")
    validate({"success": False, "error": {"code": "TIMEOUT", "message": "late"}}, "ExecuteResult")
    with pytest.raises(jsonschema.ValidationError):
        validate({"success": False, "error": {"code": "NOPE", "message": "x"}}, "ExecuteResult")


@pytest.mark.parametrize("value", [
    "yes", "No", "null", "~", "1.0", "0x10", "-", "a: b", "#hash", "'q'", '"dq"', " lead", "trail ",
    "multi\nline", "multi\nline\n", "\n\nblank first", "with\ttab", "ctl\x01\x85\u2028", "ünïcødé ≤ →",
    "{braces}", "[list]", "@at", "`tick`", "%pct", "&anchor", "*alias", "!tag", "|pipe", ">gt", "",
])
def test_emitter_round_trips_awkward_strings(value):
    document = {"k": value, value or "empty": [value, {"x": value, "y": [1, 2.5, 1e-07, True, None]}]}
    assert yaml.safe_load(to_yaml(document)) == document
