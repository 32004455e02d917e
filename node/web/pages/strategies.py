"""The Strategies page: the user's strategies and versions, a code editor, validate, upload, deploy.

Everything goes over NATS on the signed-in user's connection, through the subjects any client
uses: `strategy.v1.validate` (as the editor types, debounced, and on save), the registry
`strategy.v1.strategies.list|versions|get|put`, and `strategy.v1.deployments.create`. The
node takes the tenant from that connection's NATS identity; nothing here names a tenant.

Routes (every POST needs the session and its CSRF token; JSON in, JSON out, errors coded as
in the wire contract, with the strategy's line when there is one):

    GET  /strategies                  the page (?name=&version= opens that version)
    POST /strategies/validate         {code}                      -> {ok, valid, style, imports, error}
    POST /strategies/save             {name, code, description}   -> {ok, strategy: {name, version}, error}
    POST /strategies/deploy           {id, strategy, version, symbols, timeframe, parameters}
                                                                  -> {ok, deployment, url}
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from contracts import ErrorCode, ValidateRequest, ValidateResult, subjects
from contracts.execute import Code
from contracts.hosting import (
    NAME_PATTERN,
    DeploymentCreate,
    DeploymentReply,
    StrategyPut,
    StrategyRef,
    StrategyReply,
)

from ..auth import require_user
from ..natsconn import user_nats
from ..templates import render
from .replies import Refused, failure, nats_request, ok, read_body, refused

__all__ = ["routes"]

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]

NEW_STRATEGY = '''def strategy(data):
    """Buy when the 20-bar average crosses above the 50-bar one, sell when it crosses below."""
    fast = data["close"].rolling(20).mean()
    slow = data["close"].rolling(50).mean()
    if fast.iloc[-1] > slow.iloc[-1]:
        return "BUY"
    return "SELL"
'''


class ValidateBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Code


class SaveBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    code: Code
    description: Annotated[str, msgspec.Meta(max_length=1024)] = ""


class DeployBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: Name
    strategy: Name
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    symbols: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]  # "AAPL, MSFT" as typed
    timeframe: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    parameters: dict[str, Any] = {}


async def _page(request: Request):
    await require_user(request)
    nc = await user_nats(request)
    name = request.query_params.get("name") or None
    raw_version = request.query_params.get("version") or None
    listing = await request_or_none(nc, StrategyRef(), "list")
    strategies = listing.strategies if listing is not None and listing.ok else []
    versions, current, problem = [], None, None
    if name is not None:
        try:
            version = int(raw_version) if raw_version is not None else None
            ref = StrategyRef(name=name, version=version)
        except (ValueError, msgspec.ValidationError):
            ref, problem = None, f"no such strategy version: {name[:64]!r} {str(raw_version)[:16]!r}"
        if ref is not None:
            got = await request_or_none(nc, ref, "get")
            every = await request_or_none(nc, StrategyRef(name=name), "versions")
            if got is not None and got.ok:
                current = got.strategy
                versions = every.versions if every is not None and every.ok else []
            else:
                problem = got.error.message if got is not None and got.error else "the registry did not answer"
    return render(
        request, "strategies.html",
        strategies=strategies, versions=versions, current=current, problem=problem,
        code=current.code if current is not None else NEW_STRATEGY,
        strategy_name=current.name if current is not None else "",
        version=current.version if current is not None else None,
    )


async def request_or_none(nc: Any, ref: StrategyRef, op: str) -> StrategyReply | None:
    """A registry read for the page; None when the fleet does not answer (the page says so)."""
    try:
        return await nats_request(nc, f"{subjects.STRATEGIES}.{op}", ref, StrategyReply)
    except Exception as exc:  # noqa: BLE001 - NATS failures only; anything else is re-raised
        failure(exc)  # raises what is not a NATS failure
        return None


async def _validate(request: Request):
    await require_user(request)
    try:
        body = await read_body(request, ValidateBody)
        res = await nats_request(await user_nats(request), subjects.VALIDATE, ValidateRequest(code=body.code), ValidateResult)
    except Exception as exc:  # noqa: BLE001 - failure() re-raises anything it does not code
        return failure(exc)
    return ok(valid=res.valid, style=res.style, imports=res.imports, error=res.error)


async def _save(request: Request):
    await require_user(request)
    try:
        body = await read_body(request, SaveBody)
        # the registry compiles and policy-checks the code like validate: a refusal names the line
        reply = await nats_request(await user_nats(request), f"{subjects.STRATEGIES}.put",
                              StrategyPut(name=body.name, code=body.code, description=body.description), StrategyReply)
    except Exception as exc:  # noqa: BLE001
        return failure(exc)
    if not reply.ok or reply.strategy is None:
        return refused(reply.error)
    s = reply.strategy
    return ok(strategy={"name": s.name, "version": s.version, "style": s.style, "created_at": s.created_at},
              url=f"/strategies?name={s.name}&version={s.version}")


def _symbols(text: str) -> list[str]:
    symbols = [s for s in (part.strip() for part in text.replace(",", " ").split()) if s]
    if not symbols:
        raise Refused(ErrorCode.INVALID_REQUEST, "symbols: name at least one symbol")
    return symbols


async def _deploy(request: Request):
    await require_user(request)
    try:
        body = await read_body(request, DeployBody)
        try:
            create = DeploymentCreate(id=body.id, strategy=body.strategy, version=body.version,
                                      symbols=_symbols(body.symbols), timeframe=body.timeframe,
                                      parameters=body.parameters)
        except (ValueError, TypeError, msgspec.ValidationError) as exc:
            raise Refused(ErrorCode.INVALID_REQUEST, f"invalid deployment: {exc}") from None
        # DeploymentCreate's field checks run on decode; round-trip so a bad symbol is named here
        try:
            create = msgspec.json.decode(msgspec.json.encode(create), type=DeploymentCreate)
        except msgspec.ValidationError as exc:
            raise Refused(ErrorCode.INVALID_REQUEST, f"invalid deployment: {exc}") from None
        reply = await nats_request(await user_nats(request), f"{subjects.DEPLOYMENTS}.create", create, DeploymentReply)
    except Exception as exc:  # noqa: BLE001
        return failure(exc)
    if not reply.ok:
        return refused(reply.error)
    return ok(deployment=body.id, url=f"/deployments/{body.id}")


routes: list[BaseRoute] = [
    # The vendored editor (CodeMirror 5, MIT; static/vendor/codemirror/README says what and
    # from where). Mounted here, ahead of the app's /static/vendor (plotly.js from its wheel).
    Mount("/static/vendor/codemirror", app=StaticFiles(packages=[("node.web", "static/vendor/codemirror")]),
          name="codemirror"),
    Route("/strategies", _page, methods=["GET"]),
    Route("/strategies/validate", _validate, methods=["POST"]),
    Route("/strategies/save", _save, methods=["POST"]),
    Route("/strategies/deploy", _deploy, methods=["POST"]),
]
