"""Requests are strict, replies tolerant: every Struct a client-facing request is made of refuses
a field it does not declare (so nothing sent is silently ignored), while every reply Struct
accepts fields it does not know (so a newer node's reply never breaks an older client).
contracts/hosting.py's Structs are outside this check for now.
"""

from __future__ import annotations

import msgspec
import msgspec.inspect as mi
import pytest

from contracts.asyncapi import REQUEST_REPLY
from contracts.backtest import BacktestRequest, BacktestResult
from contracts.execute import ExecuteRequest, ExecuteResult
from contracts.quotas import QuotaReply, QuotaRequest
from contracts.schema import MESSAGES
from contracts.screen import ScreenRequest, ScreenResult
from contracts.validate import ValidateRequest, ValidateResult

REQUESTS = (ExecuteRequest, ValidateRequest, BacktestRequest, ScreenRequest, QuotaRequest)
REPLIES = (ExecuteResult, ValidateResult, BacktestResult, ScreenResult, QuotaReply)


def structs_in(root: type) -> set[type]:
    """Every Struct type reachable from `root` through its fields."""
    found: set[type] = set()

    def walk(t: mi.Type) -> None:
        if isinstance(t, mi.StructType):
            if t.cls in found:
                return
            found.add(t.cls)
            for f in t.fields:
                walk(f.type)
        for attr in ("types", "item_type", "key_type", "value_type"):
            inner = getattr(t, attr, None)
            for sub in inner if isinstance(inner, tuple) else ([inner] if inner is not None else []):
                walk(sub)

    walk(mi.type_info(root))
    return found


def test_the_request_list_covers_every_request_reply_subject():
    assert {req for _, req, _, _ in REQUEST_REPLY.values() if req.__module__ != "contracts.asyncapi"} \
        == set(REQUESTS)


@pytest.mark.parametrize("struct", sorted({s for r in REQUESTS for s in structs_in(r)}, key=lambda s: s.__name__),
                         ids=lambda s: s.__name__)
def test_every_struct_of_a_request_forbids_unknown_fields(struct):
    assert struct.__struct_config__.forbid_unknown_fields, struct


@pytest.mark.parametrize("struct", sorted({s for r in REPLIES for s in structs_in(r)}, key=lambda s: s.__name__),
                         ids=lambda s: s.__name__)
def test_every_struct_of_a_reply_accepts_unknown_fields(struct):
    assert not struct.__struct_config__.forbid_unknown_fields, struct


@pytest.mark.parametrize("name", [r.__name__ for r in REQUESTS])
def test_the_request_schemas_say_additional_properties_are_refused(name):
    schema = msgspec.json.schema(MESSAGES[name])
    assert schema["$defs"][name]["additionalProperties"] is False


def test_an_old_client_decodes_a_reply_with_a_field_it_does_not_know():
    reply = msgspec.json.decode(b'{"success": true, "added_in_a_later_version": 1}', type=ExecuteResult)
    assert reply.success is True
