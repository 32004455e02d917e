"""Backtests started from the dashboard: durable jobs as the signed-in user, followed by push.

A run is a set of durable jobs (node/durable.py, the `strategy.jobs.backtest` protocol any
client speaks), published on the user's own NATS connection so the node sees the user's
identity:

* a single backtest is one job;
* a sweep is split like the CLI splits it (node.sweep.split_grid: sub-grids of 8-32 points),
  one job per sub-grid, and once every sub-grid is in, one more job (`<run>-best`) backtests
  the best-ranked point in full for the report's charts.

Every job carries `Strategy-Reply-To: <an inbox of the user's connection>`, so progress is
pushed: the follower subscribes to that inbox, reads once which results are already stored
(a reply sent before it subscribed is not lost: the stored result is the source of truth),
then waits for the replies of the rest. No loop polls anything.

Nothing is kept in the web process: the run's description (`RunToken`: strategy, version,
range, grid, the job ids and the inbox) travels in the page's URLs, signed with the session's
secret so that a link works only in the session that started the run, the results live in
STRATEGY_RESULTS under their job ids (unguessable, JOBS_RESULT_TTL_SECONDS), and the report
is rendered from them by node/report.py, the same charts `strategy-node backtest --report`
writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
import weakref
from typing import Annotated, Any, AsyncIterator

import msgspec
import nats.errors

from contracts import (
    BacktestOptions,
    BacktestRequest,
    BacktestResult,
    BarsRef,
    ErrorCode,
    ErrorInfo,
    SweepRow,
    limits,
    subjects,
)

from ...durable import JOB_ID
from ...jobs_client import result as stored_result
from ...jobs_client import submit
from .replies import Refused, nats_request
from ...sweep import check_rank_by, chunk_size, grid_points, grid_size, parse_grid_spec, rank, split_grid

__all__ = ["RunForm", "RunToken", "Refused", "parse_form", "start_run", "follow_run", "report_fragment",
           "stored_series"]

REPORT_EQUITY_POINTS = 5_000  # as `strategy-node backtest --report` asks for a single backtest
SUBGRID_UNITS = 8  # sub-grids a sweep is cut into at least (8-32 points each)
FOLLOW_LIMIT_S = 600.0  # a follower gives up after this long without every result
RECHECK_S = 2.0  # while following, the store is read again this often (a result stored with no push)
MAX_TOKEN_CHARS = 6_000  # a run's link (URLs stay well under HTTP servers' request-line limits)
BARS_TIMEOUT_S = 1.0  # reading BARS' index or a series as the user (a tenant account may not)
# Connections BARS did not answer: a tenant account reaches only the service, and a request its
# permissions deny just times out. Asked once per signed-in connection, not on every page.
_NO_BARS_ACCESS: "weakref.WeakSet[Any]" = weakref.WeakSet()

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
SymbolText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
TimeframeText = Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")]
TimeText = Annotated[str, msgspec.Meta(max_length=40)]


class RunForm(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The backtest form, as the page posts it (JSON). Unknown fields are refused by name."""

    strategy: Name
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    symbol: SymbolText
    timeframe: TimeframeText
    start: TimeText = ""
    end: TimeText = ""
    parameters: dict[str, Any] = {}
    grid: Annotated[str, msgspec.Meta(max_length=2_000)] = ""  # CLI syntax: fast=5:50:5 slow=60,120
    rank_by: Annotated[str, msgspec.Meta(max_length=64)] = "sharpe_ratio"
    mode: str = "native"
    cash: Annotated[float, msgspec.Meta(gt=0)] = 10_000.0
    commission: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    allow_short: bool = False


class Job(msgspec.Struct):
    id: str
    points: int  # grid points (1 for a single backtest)
    subgrid: dict[str, list[Any]] | None = None


class RunToken(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything needed to follow a run and draw its report; carried in URLs, never stored.
    The jobs are derived from it: `<id>` for a single backtest, `<id>-<i>` per sub-grid."""

    id: str
    inbox: str
    form: RunForm
    version: int  # the strategy version the jobs ran (the latest at start when none was picked)

    def encode(self, key: str) -> str:
        """The token for URLs, signed with `key` (the session's secret: a link works only in
        the session that started the run)."""
        body = base64.urlsafe_b64encode(msgspec.json.encode(self)).decode().rstrip("=")
        return f"{body}.{_signature(key, body)}"

    @classmethod
    def decode(cls, text: str, key: str) -> "RunToken":
        body, _, signature = text.rpartition(".")
        if not body or not hmac.compare_digest(signature, _signature(key, body)):
            raise Refused(ErrorCode.INVALID_REQUEST, "this run belongs to another session (or the link is damaged): "
                          "start it again from the Backtest page", status=403)
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            token = msgspec.json.decode(raw, type=cls)
        except (ValueError, msgspec.DecodeError) as exc:
            raise Refused(ErrorCode.INVALID_REQUEST, f"invalid run token: {exc}") from None
        if not _valid_job(token.best_job):
            raise Refused(ErrorCode.INVALID_REQUEST, "invalid run token: bad run id")
        from ...nats_auth import is_inbox_subject

        if not is_inbox_subject(token.inbox):
            raise Refused(ErrorCode.INVALID_REQUEST, "invalid run token: bad inbox")
        return token

    @property
    def grid(self) -> dict[str, list[Any]] | None:
        return _grid(self.form)

    @property
    def sweep(self) -> bool:
        return bool(self.form.grid.split())

    @property
    def jobs(self) -> list[Job]:
        grid = self.grid
        if grid is None:
            return [Job(self.id, 1)]
        subgrids = split_grid(grid, chunk_size(grid_size(grid), SUBGRID_UNITS), 32)
        return [Job(f"{self.id}-{i}", grid_size(sub), sub) for i, sub in enumerate(subgrids)]

    @property
    def best_job(self) -> str:
        return f"{self.id}-best"


def _signature(key: str, body: str) -> str:
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]


def _valid_job(job_id: str) -> bool:
    from ...durable import valid_job_id

    return valid_job_id(job_id)


def parse_form(body: bytes) -> RunForm:
    """The posted JSON as a RunForm; INVALID_REQUEST naming the field otherwise."""
    try:
        form = msgspec.json.decode(body, type=RunForm)
    except msgspec.ValidationError as exc:
        raise Refused(ErrorCode.INVALID_REQUEST, f"invalid backtest form: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Refused(ErrorCode.INVALID_REQUEST, f"the backtest form is not JSON: {exc}") from None
    if form.mode not in ("native", "backtesting_py"):
        raise Refused(ErrorCode.INVALID_REQUEST, f"mode must be native or backtesting_py, got {form.mode[:40]!r}")
    from backtest.store import parse_time

    from contracts import ExecutionError

    for field in ("start", "end"):
        try:
            parse_time(_when(getattr(form, field)), field, end=field == "end")
        except ExecutionError as exc:
            raise Refused(ErrorCode.INVALID_REQUEST, exc.message) from None
    return form


def _grid(form: RunForm) -> dict[str, list[Any]] | None:
    items = form.grid.split()
    if not items:
        if form.rank_by != "sharpe_ratio":
            raise Refused(ErrorCode.INVALID_REQUEST, "rank_by ranks a sweep: give a grid too")
        return None
    try:
        grid = parse_grid_spec(items)
    except ValueError as exc:
        raise Refused(ErrorCode.INVALID_REQUEST, f"grid: {exc}") from None
    try:
        check_rank_by(form.rank_by)
    except Exception as exc:  # ExecutionError with the list of metrics
        raise Refused(ErrorCode.INVALID_REQUEST, str(exc)) from None
    total = grid_size(grid)
    if total > limits.MAX_GRID_POINTS:
        raise Refused(ErrorCode.INVALID_REQUEST, f"grid has {total} points; the limit is {limits.MAX_GRID_POINTS}")
    return grid


def _request(form: RunForm, code: str, *, grid: dict[str, list[Any]] | None, equity_points: int = 500,
             parameters: dict[str, Any] | None = None) -> BacktestRequest:
    options = BacktestOptions(mode=form.mode, initial_cash=form.cash, commission_rate=form.commission,
                              allow_short=form.allow_short, equity_points=equity_points)
    source = BarsRef(symbol=form.symbol, timeframe=form.timeframe,
                     start=_when(form.start), end=_when(form.end))
    fields: dict[str, Any] = dict(code=code, source=source, symbol=form.symbol, timeframe=form.timeframe,
                                  parameters=parameters if parameters is not None else form.parameters,
                                  options=options)
    if grid is not None:
        fields.update(grid=grid, rank_by=form.rank_by)
    try:
        # decoded, not just built: every field's constraints apply here as on the node
        return msgspec.json.decode(msgspec.json.encode(BacktestRequest(**fields)), type=BacktestRequest)
    except (ValueError, TypeError, msgspec.ValidationError) as exc:
        raise Refused(ErrorCode.INVALID_REQUEST, f"invalid backtest: {exc}") from None


def _when(text: str) -> str | int | None:
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


async def _code(nc: Any, name: str, version: int | None) -> tuple[str, int]:
    """The strategy's source from the registry, read as the user."""
    from contracts.hosting import StrategyRef, StrategyReply

    reply = await nats_request(nc, f"{subjects.STRATEGIES}.get", StrategyRef(name=name, version=version), StrategyReply)
    if not reply.ok or reply.strategy is None:
        error = reply.error
        raise Refused(error.code if error else ErrorCode.INVALID_REQUEST,
                         error.message if error else f"strategy {name!r} not found")
    return reply.strategy.code, reply.strategy.version


async def start_run(nc: Any, form: RunForm) -> RunToken:
    """Publish the run's jobs on the user's connection; the token to follow it by."""
    grid = _grid(form)
    code, version = await _code(nc, form.strategy, form.version)
    run_id = uuid.uuid4().hex
    token = RunToken(id=run_id, inbox=nc.new_inbox(), form=form, version=version)
    size = len(msgspec.json.encode(token)) * 4 // 3
    if size > MAX_TOKEN_CHARS:  # the run travels in its links: keep them a size every server takes
        raise Refused(ErrorCode.INVALID_REQUEST,
                      f"parameters and grid take {size:,} characters in the run's links; the page allows "
                      f"{MAX_TOKEN_CHARS:,}: use fewer, or `strategy-node backtest` for large ones")
    requests = [(job.id, _request(form, code, grid=job.subgrid,
                                  equity_points=500 if grid else REPORT_EQUITY_POINTS))
                for job in token.jobs]
    await asyncio.gather(*(submit(nc, "backtest", req, job_id, reply_to=token.inbox)
                           for job_id, req in requests))
    return token


async def _results(nc: Any, job_ids: list[str]) -> dict[str, BacktestResult]:
    """The stored results among `job_ids` (one direct get each, no waiting)."""
    found = await asyncio.gather(*(stored_result(nc, job_id) for job_id in job_ids))
    return {job_id: res for job_id, res in zip(job_ids, found) if res is not None}


def merged_sweep(token: RunToken, results: dict[str, BacktestResult]) -> BacktestResult:
    """The sub-grid results as one ranked sweep, as a node would rank them."""
    jobs = token.jobs
    rows: list[SweepRow] = []
    bars = 0
    for job in jobs:
        res = results.get(job.id)
        if res is not None and res.sweep:
            rows += res.sweep
            bars = max(bars, res.bars)
        else:
            error = (res.error if res is not None else None) or ErrorInfo(
                code=ErrorCode.INTERNAL, message="this sub-grid has no stored result")
            rows += [SweepRow(parameters=p, error=error) for p in grid_points(job.subgrid or {})]
    ranked = rank(rows, token.form.rank_by)
    error = None
    if rows and all(r.error is not None for r in rows):
        first = rows[0].error
        error = ErrorInfo(code=first.code, line=first.line, message=f"every grid point failed; the first: {first.message}")
    return BacktestResult(success=error is None, sweep=ranked, error=error, bars=bars)


async def _submit_best(nc: Any, token: RunToken, sweep: BacktestResult) -> bool:
    """Backtest the best-ranked point in full (job `<run>-best`, dropped as a duplicate when a
    follower already submitted it); False when no point ran."""
    if not sweep.sweep or sweep.sweep[0].error is not None:
        return False
    code, _ = await _code(nc, token.form.strategy, token.version)
    params = {**token.form.parameters, **sweep.sweep[0].parameters}
    req = _request(token.form, code, grid=None, equity_points=REPORT_EQUITY_POINTS, parameters=params)
    await submit(nc, "backtest", req, token.best_job, reply_to=token.inbox)
    return True


async def follow_run(nc: Any, token: RunToken, limit_s: float = FOLLOW_LIMIT_S) -> AsyncIterator[dict[str, Any]]:
    """Events of a run as they happen: `progress` {done, total, stage}, then `done` or `failed`.

    Subscribes to the run's inbox first, then reads which results are already stored, then
    takes the rest from the pushed replies (a reply that came before the subscription is
    found stored; one that comes after both is simply ignored). A result can also be stored
    with no push at all: the node refused the jobs' reply header (JOB_REPLY_PREFIXES does not
    name this user's inbox prefix for its account: the result is that INVALID_REQUEST), or its
    connection dropped between storing and pushing. So while it waits, the store is read again
    every RECHECK_S (the stored result is the source of truth)."""
    sub = await nc.subscribe(token.inbox)
    try:
        total = sum(j.points for j in token.jobs)
        stage = "sweep" if token.sweep else "backtest"
        waiting = {j.id: j.points for j in token.jobs}
        done = sum(waiting.pop(job_id) for job_id in await _results(nc, list(waiting)))
        yield {"event": "progress", "done": done, "total": total, "stage": stage}
        deadline = time.monotonic() + limit_s
        best_checked = False
        while True:
            if token.sweep and not waiting and not best_checked:
                best_checked = True  # every sub-grid is in: the best point, in full, for the charts
                if await _start_best(nc, token):
                    stage = "best"
                    if not await _results(nc, [token.best_job]):
                        waiting[token.best_job] = 0
                    yield {"event": "progress", "done": done, "total": total, "stage": stage}
            if not waiting:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                yield {"event": "failed", "error": {"code": ErrorCode.TIMEOUT.value,
                                                    "message": f"no result after {limit_s:.0f} s"}}
                return
            try:
                msg = await sub.next_msg(timeout=min(left, RECHECK_S))
            except nats.errors.TimeoutError:
                found = await _results(nc, list(waiting))
                if found:
                    done += sum(waiting.pop(job_id) for job_id in found)
                    yield {"event": "progress", "done": done, "total": total, "stage": stage}
                continue
            job_id = (msg.headers or {}).get(JOB_ID)
            if job_id in waiting:
                done += waiting.pop(job_id)
                yield {"event": "progress", "done": done, "total": total, "stage": stage}
        yield {"event": "done", "summary": await summary(nc, token)}
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the connection may be gone already
            pass


async def _start_best(nc: Any, token: RunToken) -> bool:
    stored = await _results(nc, [j.id for j in token.jobs])
    return await _submit_best(nc, token, merged_sweep(token, stored))


async def summary(nc: Any, token: RunToken) -> dict[str, Any]:
    """A few figures for the page beside the report."""
    if not token.sweep:
        res = (await _results(nc, [token.id])).get(token.id)
        if res is None:
            return {"success": False, "error": {"code": "INTERNAL", "message": "no stored result"}}
        p = res.performance
        return {"success": res.success, "bars": res.bars, "signals": res.signals_count,
                "error": msgspec.to_builtins(res.error) if res.error else None,
                "total_return": p.total_return if p else None, "sharpe_ratio": p.sharpe_ratio if p else None}
    sweep = merged_sweep(token, await _results(nc, [j.id for j in token.jobs]))
    rows = sweep.sweep or []
    return {"success": sweep.success, "points": len(rows), "ran": sum(1 for r in rows if r.error is None),
            "best": rows[0].parameters if rows and rows[0].error is None else None,
            "error": msgspec.to_builtins(sweep.error) if sweep.error else None}


class EmbeddedFigures:
    """node/report.py's figures as JSON data blocks, drawn by the page's own plotly.js
    (/static/vendor/plotly.min.js, backtest.js): the dashboard's CSP runs no inline script.
    `<`, `>` and `&` are escaped inside the JSON, so no value can close the block."""

    def html(self, fig) -> str:
        data = fig.to_json(validate=False)
        data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return f'<div class="report-figure"><script type="application/json">{data}</script></div>'


def _body(page: str) -> str:
    """The report's body (node/report.py writes one whole page): the part the dashboard shows."""
    return page.split("<body>", 1)[-1].rsplit("</body>", 1)[0]


async def _bars(nc: Any, form: RunForm, timeout: float = BARS_TIMEOUT_S):
    """The run's bars for the price chart, replayed from BARS as the user; None when the user
    may not read BARS (a tenant account reaches only the service) or it does not answer."""
    from backtest.store import BarStore

    if nc in _NO_BARS_ACCESS:
        return None
    try:
        return await asyncio.wait_for(BarStore(nc.jetstream(timeout=timeout), nc).replay_ref(
            BarsRef(symbol=form.symbol, timeframe=form.timeframe, start=_when(form.start), end=_when(form.end))),
            timeout)
    except (asyncio.TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
        _NO_BARS_ACCESS.add(nc)
        return None
    except Exception:  # noqa: BLE001 - the report is still drawn, without prices (it says so)
        return None


async def report_fragment(nc: Any, token: RunToken) -> str:
    """The run's report (node/report.py, the same charts as `backtest --report`) as an HTML
    fragment for the page, from the stored results."""
    from ...report import backtest_report, sweep_report

    form = token.form
    title = f"{form.strategy} v{token.version} — {form.symbol} {form.timeframe}"
    if not token.sweep:
        res, bars = await asyncio.gather(_results(nc, [token.id]), _bars(nc, form))
        res = res.get(token.id)
        if res is None:
            raise Refused(ErrorCode.INVALID_REQUEST, "this run has no stored result (yet, or any more)")
        return _body(backtest_report(res, title=title, bars=bars, figures=EmbeddedFigures(),
                                     subtitle=f"backtest, {res.bars:,} bars, {form.mode} mode"))
    results, bars = await asyncio.gather(_results(nc, [j.id for j in token.jobs] + [token.best_job]),
                                         _bars(nc, form))
    sweep = merged_sweep(token, results)
    best = results.get(token.best_job)
    if best is not None:
        sweep.bars = best.bars
    return _body(sweep_report(sweep, rank_by=form.rank_by, title=title, best=best, bars=bars,
                              figures=EmbeddedFigures(),
                              subtitle=f"sweep of {len(sweep.sweep or []):,} points, {form.mode} mode"))


async def stored_series(nc: Any) -> list[dict[str, Any]]:
    """What BARS holds (symbol, timeframe, bars, first, last), as `strategy-node bars ls` lists it."""
    from backtest.store import BarStore

    if nc in _NO_BARS_ACCESS:
        raise Refused(ErrorCode.INVALID_REQUEST, "BARS is not readable with this NATS user")
    try:
        series = await asyncio.wait_for(BarStore(nc.jetstream(timeout=BARS_TIMEOUT_S), nc).symbols(), BARS_TIMEOUT_S)
    except (asyncio.TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
        _NO_BARS_ACCESS.add(nc)
        raise
    return [{"symbol": s.symbol, "timeframe": s.timeframe, "bars": s.bars, "first": s.first, "last": s.last}
            for s in series]
