"""AsyncAPI 3.0 description of the v1 wire contract, generated from the msgspec Structs.

    python -m contracts.asyncapi [path]      writes contracts/asyncapi.yaml (or `path`)

The document describes the node (the application): every subject of `contracts.subjects` is a
channel, and every channel has a `receive` operation whose `reply` goes to the requester's inbox.
Payload schemas come from `msgspec.json.schema_components`, so they are the same as the JSON
Schemas in contracts/schema/. A test fails when the committed file drifts from this generator,
or when a subject is added to contracts/subjects.py without a line in `REQUEST_REPLY` below.

Output format: YAML written by the small emitter at the bottom of this module, so generating
needs nothing beyond the standard library and msgspec (PyYAML is a dev dependency only; the
test reads the file back with it). Strings that are not plain words are written as JSON
double-quoted strings, which YAML reads the same way; multi-line descriptions are literal
blocks. Key order is fixed, so the output is byte-for-byte deterministic.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import msgspec

from . import subjects
from .backtest import BacktestRequest, BacktestResult
from .errors import ErrorCode
from .execute import ExecuteRequest, ExecuteResult
from .health import Health
from .hosting import (
    DeploymentCreate,
    DeploymentDeploy,
    DeploymentRef,
    DeploymentReply,
    DeploymentUpdate,
    RunLogs,
    StrategyPut,
    StrategyRef,
    StrategyReply,
)
from .execute import Signal
from .quotas import QuotaReply, QuotaRequest
from .secrets import SecretPut, SecretRef, SecretReply
from .screen import ScreenRequest, ScreenResult
from .validate import ValidateRequest, ValidateResult

ASYNCAPI_FILE = Path(__file__).with_name("asyncapi.yaml")
CONTRACT_VERSION = "1.0.0"
REF = "#/components/schemas/{name}"


class AnyRequest(msgspec.Struct):
    """Any payload (an empty one is fine); the node ignores it."""


# Subject constant in contracts.subjects → (operation id, request Struct, reply Struct, summary).
# Every `strategy.*` subject constant must be listed (tests/contracts/test_asyncapi.py checks).
REQUEST_REPLY: dict[str, tuple[str, type, type, str]] = {
    "EXECUTE": ("execute", ExecuteRequest, ExecuteResult,
                "Run a strategy over bars: signals, indicators, metrics."),
    "VALIDATE": ("validate", ValidateRequest, ValidateResult,
                 "Compile and policy-check a strategy without running it."),
    "BACKTEST": ("backtest", BacktestRequest, BacktestResult,
                 "Backtest a strategy over inline or stored bars, optionally over a parameter grid."),
    "BACKTEST_POINT": ("backtestPoint", BacktestRequest, BacktestResult,
                       "One grid point of a sweep, fanned out by the node that received the sweep "
                       "(nodes send it, as msgpack; a point carries no grid)."),
    "SCREEN": ("screen", ScreenRequest, ScreenResult,
               "Run a classify_symbol strategy over a universe of stored symbols."),
    "QUOTAS": ("quotas", QuotaRequest, QuotaReply,
               "The calling tenant's quotas of hosted objects: each limit, the node setting that holds it, "
               "what the tenant has now and what a create at the limit meets."),
    "HEALTH": ("health", AnyRequest, Health,
               "Status, version, limits and the active isolation layers of any one node."),
}


# Hosted strategies: one request-reply subject per operation of each group (contracts/hosting.py).
HOSTING_OPS: dict[str, tuple[str, str, str]] = {  # group constant -> (op id prefix, noun, verb summary)
    "STRATEGIES": ("strategies", "strategy", "the tenant's strategy registry"),
    "DEPLOYMENTS": ("deployments", "deployment", "the tenant's deployments"),
    "SECRETS": ("secrets", "secret", "the tenant's encrypted secrets (values go in, never come back)"),
}


def hosting_types(group: str, op: str) -> tuple[type, type]:
    if group == "STRATEGIES":
        return (StrategyPut if op == "put" else StrategyRef), StrategyReply
    if group == "SECRETS":
        return (SecretPut if op == "put" else SecretRef), SecretReply
    return ({"create": DeploymentCreate, "update": DeploymentUpdate, "deploy": DeploymentDeploy}.get(op, DeploymentRef),
            DeploymentReply)


def hosting_subjects() -> dict[str, tuple[str, str]]:
    """Every hosted-strategy request subject: subject -> (group constant, op)."""
    out = {}
    for group, ops in (("STRATEGIES", subjects.STRATEGY_OPS), ("DEPLOYMENTS", subjects.DEPLOYMENT_OPS),
                       ("SECRETS", subjects.SECRET_OPS)):
        for op in ops:
            out[f"{getattr(subjects, group)}.{op}"] = (group, op)
    return out


# -- NATS micro discovery ($SRV.*) payloads, as nats.micro sends them ---------------------------

class SrvPing(msgspec.Struct, kw_only=True):
    """`io.nats.micro.v1.ping_response`."""

    type: str = "io.nats.micro.v1.ping_response"
    name: str
    id: str
    version: str
    metadata: dict[str, str] = {}


class SrvEndpointInfo(msgspec.Struct, kw_only=True):
    name: str
    subject: str
    queue_group: str
    metadata: dict[str, str] | None = None


class SrvInfo(msgspec.Struct, kw_only=True):
    """`io.nats.micro.v1.info_response`: the endpoints and their queue groups."""

    type: str = "io.nats.micro.v1.info_response"
    name: str
    id: str
    version: str
    description: str | None = None
    metadata: dict[str, str] = {}
    endpoints: list[SrvEndpointInfo] = []


class LatencyMs(msgspec.Struct, kw_only=True):
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class EndpointData(msgspec.Struct, kw_only=True):
    """The node's own figures in each endpoint's `data` (node/metrics.py `snapshot`)."""

    requests: int
    errors_by_code: dict[str, int]
    latency_ms: LatencyMs
    compile_cache_hit_ratio: float | None = None


class SrvEndpointStats(msgspec.Struct, kw_only=True):
    name: str
    subject: str
    queue_group: str
    num_requests: int
    num_errors: int
    last_error: str | None = None
    processing_time: int
    average_processing_time: int
    data: EndpointData | None = None


class SrvStats(msgspec.Struct, kw_only=True):
    """`io.nats.micro.v1.stats_response`: request counts and processing time per endpoint."""

    type: str = "io.nats.micro.v1.stats_response"
    name: str
    id: str
    version: str
    started: str
    metadata: dict[str, str] = {}
    endpoints: list[SrvEndpointStats] = []


SRV_VERBS: dict[str, tuple[type, str]] = {
    "PING": (SrvPing, "Which instances of the service are up."),
    "INFO": (SrvInfo, "Each instance's endpoints, subjects and queue groups."),
    "STATS": (SrvStats, "Each instance's request counts, errors and latency per endpoint."),
}


# -- document ---------------------------------------------------------------------------------

def request_subjects() -> dict[str, str]:
    """Every request subject constant of contracts.subjects: NAME → subject."""
    return {name: value for name, value in vars(subjects).items()
            if name.isupper() and isinstance(value, str) and value.startswith(subjects.PREFIX + ".")
            and name not in HOSTING_OPS}  # group prefixes: their subjects are `<prefix>.<op>` (hosting_subjects)


def _message(name: str, schema_ref: dict, headers: str) -> dict:
    return {
        "name": name,
        "title": name,
        "contentType": subjects.JSON,
        "headers": {"$ref": f"#/components/schemas/{headers}"},
        "payload": schema_ref,
    }


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def build() -> dict[str, Any]:
    """The AsyncAPI document as plain data (deterministic order)."""
    present = request_subjects()
    entries = [(const, present[const], *REQUEST_REPLY[const]) for const in REQUEST_REPLY if const in present]
    srv_types = [t for t, _ in SRV_VERBS.values()]
    payload_types = []
    for *_, request, reply, _summary in entries:
        payload_types += [t for t in (request, reply) if t is not AnyRequest]
    for group, op in hosting_subjects().values():
        payload_types += [t for t in hosting_types(group, op) if t not in payload_types]
    payload_types += [Signal, RunLogs]
    refs, schemas = msgspec.json.schema_components(payload_types + srv_types, ref_template=REF)
    ref_of: dict[type, dict] = dict(zip(payload_types + srv_types, refs))
    ref_of[AnyRequest] = {"description": AnyRequest.__doc__}  # no constraint at all
    schemas = dict(schemas)
    schemas["RequestHeaders"] = _request_headers()
    schemas["ReplyHeaders"] = _reply_headers()

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    inbox_messages: dict[str, Any] = {}

    def message_ref(type_: type, headers: str) -> tuple[str, dict]:
        name = type_.__name__
        if name not in messages:
            messages[name] = _message(name, ref_of[type_], headers)
        return name, {"$ref": f"#/components/messages/{name}"}

    def add(op_id: str, address: str, request: type, reply: type, summary: str, queue: str,
            parameters: dict | None = None, description: str | None = None) -> None:
        req_name, req_ref = message_ref(request, "RequestHeaders")
        rep_name, rep_ref = message_ref(reply, "ReplyHeaders")
        req_id, rep_id = _lower_first(req_name), _lower_first(rep_name)
        channel: dict[str, Any] = {"address": address, "title": address, "summary": summary}
        if description:
            channel["description"] = description
        if parameters:
            channel["parameters"] = parameters
        channel["messages"] = {req_id: req_ref}
        channels[op_id] = channel
        inbox_messages.setdefault(rep_id, rep_ref)
        operations[op_id] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{op_id}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{op_id}/messages/{req_id}"}],
            "reply": {
                "channel": {"$ref": "#/channels/inbox"},
                "messages": [{"$ref": f"#/channels/inbox/messages/{rep_id}"}],
            },
            "bindings": {"nats": {"queue": queue, "bindingVersion": "0.1.0"}},
        }

    for const, address, op_id, request, reply, summary in entries:
        add(op_id, address, request, reply, summary, subjects.QUEUE_GROUP)
        if const == "HEALTH":
            # Each node's own health subject (readiness probes ask their own pod).
            example = subjects.node_health("strategy-node-7d9f-abcde")
            add("nodeHealth", subjects.HEALTH + ".{node_id}", request, reply,
                "Health of one node, for probes that must ask their own pod.", "health-{node_id}",
                parameters={"node_id": {
                    "description": "The node's NODE_ID (the pod name in Kubernetes); characters "
                                   "other than letters, digits, - and _ become _.",
                    "examples": [example.rsplit(".", 1)[-1]],
                }},
                description="Each node serves it in a queue group of its own, `health-<node_id>`.")

    # Durable jobs: the same request bodies through the STRATEGY_JOBS work queue.
    for kind, request, reply in (("execute", ExecuteRequest, ExecuteResult),
                                 ("backtest", BacktestRequest, BacktestResult)):
        add(f"job{kind.title()}", f"{subjects.JOBS}.{kind}", request, reply,
            f"Durable {kind} job (JetStream stream STRATEGY_JOBS, consumer strategy-workers).",
            "strategy-workers",
            description=(f"Publish with header `Strategy-Job-Id: <job id>` (a job id of one tenant runs once: "
                         f"a repeat within JOBS_DUPLICATE_WINDOW_SECONDS, or after its result is stored, is "
                         f"dropped; `Nats-Msg-Id` also names the job, but JetStream reads it stream-wide, "
                         f"across tenants, for 100 ms) and, to get "
                         f"the result pushed, `{subjects.JOB_REPLY_HEADER}: <inbox>`. The result is also "
                         f"stored under `{subjects.RESULTS}.<job id>` (stream STRATEGY_RESULTS); a job "
                         f"whose deliveries run out lands on `{subjects.DEAD}.<job id>`."))
        add(f"tenantJob{kind.title()}", subjects.tenant_jobs("{account}", kind), request, reply,
            f"Durable {kind} job of a tenant account, as the server stores it.", "strategy-workers",
            parameters={"account": {
                "description": "The publishing tenant's NATS account, put there by the server: the "
                               f"tenant publishes `{subjects.JOBS}.{kind}` through its import of an "
                               "export guarded by `account_token_position`, so it cannot name "
                               "another account. The job runs as that tenant.",
                "examples": ["TENANT_A"],
            }},
            description=(f"Same headers and results as `{subjects.JOBS}.{kind}`. JetStream drops "
                         f"`{subjects.REQUEST_INFO_HEADER}` from stored messages; this subject "
                         "token is the job's verified tenant (deploy/nats/permissions.conf). Its "
                         f"result is stored under `{subjects.RESULTS}.<account>.<job id>`, and the "
                         f"tenant reads it as `{subjects.RESULTS}.<job id>` (a direct get its import "
                         "maps into its own account's results: job ids never meet across tenants)."))

    # Hosted strategies: control requests (the tenant is the caller's verified NATS account).
    for address, (group, op) in hosting_subjects().items():
        prefix, noun, what = HOSTING_OPS[group]
        request, reply = hosting_types(group, op)
        add(f"{prefix}{op.title()}", address, request, reply, f"{op.title()} in {what} ({noun}).",
            subjects.QUEUE_GROUP)
    # ... and what their runs publish (JetStream streams SIGNALS and STRATEGY_LOGS).
    for op_id, address, type_, summary in (
        ("hostedSignal", f"{subjects.SIGNALS}.{{tenant}}.{{deployment}}.{{symbol}}", Signal,
         "The newest bar's BUY/SELL signal of a hosted run (stream SIGNALS; Nats-Msg-Id = the trigger id)."),
        ("hostedLogs", f"{subjects.LOGS}.{{tenant}}.{{deployment}}", RunLogs,
         "One hosted run's captured log lines (stream STRATEGY_LOGS, kept a week)."),
    ):
        name, ref = message_ref(type_, "ReplyHeaders")
        channels[op_id] = {"address": address, "title": address, "summary": summary,
                           "parameters": {p: {"description": f"The {p} (tenant: `local` without accounts, "
                                                             "else the NATS account)." if p == "tenant" else f"The {p}."}
                                          for p in ("tenant", "deployment", "symbol") if "{" + p + "}" in address},
                           "messages": {_lower_first(name): ref}}
        operations[op_id] = {"action": "send", "channel": {"$ref": f"#/channels/{op_id}"}, "summary": summary,
                             "messages": [{"$ref": f"#/channels/{op_id}/messages/{_lower_first(name)}"}]}

    service = subjects.SERVICE_NAME
    for verb, (type_, summary) in SRV_VERBS.items():
        for suffix, op_suffix, scope, params in (
            ("", "", "every NATS micro service", None),
            (f".{service}", "Service", f"every instance of {service}", None),
            (f".{service}.{{service_id}}", "Instance", f"one instance of {service}",
             {"service_id": {"description": "The instance id from a PING or INFO response."}}),
        ):
            op_id = f"srv{verb.title()}{op_suffix}"
            add(op_id, f"$SRV.{verb}{suffix}", AnyRequest, type_, f"{summary} Asks {scope}.", "",
                parameters=params)
            del operations[op_id]["bindings"]  # discovery subjects are not in a queue group

    channels["inbox"] = {
        "address": None,
        "title": "Requester inbox",
        "summary": "The reply subject of the request (NATS request-reply).",
        "description": "Chosen by the requester: `_INBOX.<id>` by default, or below the client's own "
                       "inbox prefix (deploy/nats/permissions.conf). The reply uses the request's "
                       "encoding. The node never replies to a subject that is not an inbox.",
        "messages": inbox_messages,
    }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": service,
            "version": CONTRACT_VERSION,
            "description": _description(),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": subjects.JSON,
        "servers": {
            "nats": {
                "host": "nats.nats.svc.cluster.local:4222",
                "protocol": "nats",
                "description": "Any NATS server or cluster the nodes connect to (an embedded "
                               "nats-server on 127.0.0.1:4222 when a node runs without NATS_URL).",
                "security": [{"$ref": "#/components/securitySchemes/userPassword"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {name: schemas[name] for name in sorted(schemas)},
            "messages": {name: messages[name] for name in sorted(messages)},
            "securitySchemes": {
                "userPassword": {
                    "type": "userPassword",
                    "description": "NATS user and password (or token, nkey, creds file, mTLS), per "
                                   "deploy/nats/permissions.conf.",
                },
            },
        },
    }


def _description() -> str:
    codes = "\n".join(f"- `{code.value}`" for code in ErrorCode)
    return (
        f"Stateless execution nodes for untrusted trading strategies, as the NATS micro service "
        f"`{subjects.SERVICE_NAME}`. Requests go to the queue group `{subjects.QUEUE_GROUP}`, so the "
        f"fleet shares the load.\n"
        f"\n"
        f"Encoding: JSON by default; msgpack when the request carries the header "
        f"`Content-Type: {subjects.MSGPACK}`. The reply uses the request's encoding.\n"
        f"\n"
        f"A failed request still gets a reply: `success: false` (`valid: false` for validate) and "
        f"`error: {{code, message, line}}`, plus the headers `Nats-Service-Error` and "
        f"`Nats-Service-Error-Code`. Clients branch on `error.code`, never on the message:\n"
        f"{codes}\n"
        f"\n"
        f"Tracing: a W3C `traceparent` (and `tracestate`) request header continues the caller's "
        f"trace through the node; the reply carries the node span's `traceparent`.\n"
    )


def _request_headers() -> dict:
    return {
        "type": "object",
        "description": "NATS headers of a request; all optional.",
        "properties": {
            subjects.CONTENT_TYPE: {
                "type": "string", "enum": [subjects.JSON, subjects.MSGPACK], "default": subjects.JSON,
                "description": "Encoding of the payload; the reply uses the same one.",
            },
            "traceparent": {
                "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context of the caller's span.",
            },
            "tracestate": {"type": "string", "description": "W3C trace state, passed on."},
        },
    }


def _reply_headers() -> dict:
    return {
        "type": "object",
        "description": "NATS headers of a reply.",
        "properties": {
            subjects.CONTENT_TYPE: {"type": "string", "enum": [subjects.JSON, subjects.MSGPACK]},
            "Nats-Service-Error": {
                "type": "string", "description": "On failure: the error message (at most 200 characters).",
            },
            "Nats-Service-Error-Code": {
                "type": "string", "description": "On failure: an HTTP-like status for the error code "
                                                 "(400, 403, 408, 413, 422, 500, 503).",
            },
            "traceparent": {"type": "string", "description": "W3C trace context of the node's span."},
            "tracestate": {"type": "string"},
        },
        "required": [subjects.CONTENT_TYPE],
    }


# -- a tiny deterministic YAML emitter ----------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$.\-/]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}
# Characters YAML will not take raw (C0/C1 controls, line/paragraph separators, BOM).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def _quote(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 readers want a dot in exponent floats
            mantissa, exp = text.split("e")
            text = f"{mantissa}.0e{exp}"
        return text
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return value
        return _quote(value)
    raise TypeError(f"cannot emit {type(value).__name__}")


def _key(key: str) -> str:
    return _scalar(str(key))


def _block(text: str, indent: str) -> str | None:
    """A literal block scalar for multi-line text, or None when quoting is safer."""
    if "\n" not in text or "\r" in text or "\t" in text or _UNPRINTABLE.search(text):
        return None
    body, chomp = (text[:-1], "") if text.endswith("\n") else (text, "-")
    lines = body.split("\n")
    if body.endswith("\n") or not lines[0] or lines[0].startswith(" ") \
            or any(line != line.rstrip() for line in lines):
        return None
    inner = indent + "  "
    return f"|{chomp}\n" + "\n".join(inner + line if line else "" for line in lines)


def _emit(value: Any, indent: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _emit_item(f"{indent}{_key(key)}:", item, indent, out)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                lines: list[str] = []
                _emit(item, indent + "  ", lines)
                lines[0] = indent + "- " + lines[0][len(indent) + 2:]
                out.extend(lines)
            else:
                _emit_item(f"{indent}-", item, indent, out)
    else:
        raise TypeError("top level must be a mapping or a list")


def _emit_item(prefix: str, item: Any, indent: str, out: list[str]) -> None:
    if isinstance(item, dict) and item:
        out.append(prefix)
        _emit(item, indent + "  ", out)
    elif isinstance(item, list) and item:
        out.append(prefix)
        _emit(item, indent + "  ", out)
    elif isinstance(item, dict):
        out.append(f"{prefix} {{}}")
    elif isinstance(item, list):
        out.append(f"{prefix} []")
    elif isinstance(item, str) and (block := _block(item, indent)) is not None:
        out.append(f"{prefix} {block}")
    else:
        out.append(f"{prefix} {_scalar(item)}")


def to_yaml(document: dict[str, Any]) -> str:
    lines: list[str] = []
    _emit(document, "", lines)
    return "\n".join(lines) + "\n"


HEADER = ("# Generated by `python -m contracts.asyncapi` from the msgspec Structs in contracts/;\n"
          "# do not edit by hand (tests/contracts/test_asyncapi.py fails when it drifts).\n")


def render() -> str:
    return HEADER + to_yaml(build())


def write(path: Path = ASYNCAPI_FILE) -> Path:
    path.write_text(render(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else ASYNCAPI_FILE))
