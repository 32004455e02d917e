"""One run inside a locked-down child: build the frame, execute the strategy, shape the outcome.

Everything here executes after the lockdown, next to untrusted code, so it trusts nothing the
strategy returns: values are converted to plain types before they leave the process.
"""

from __future__ import annotations

import math
import re
import time
import types
from types import TracebackType
from typing import Any

import msgspec
import numpy as np
import pandas as pd
# pandas imports these on first use (repr/print/to_string of frames, to_dict, stack/unstack/
# crosstab). A locked-down child can load nothing from disk, so they are loaded here, in the
# zygote, with this module.
import pandas.core.methods.to_dict  # noqa: F401
import pandas.core.reshape.reshape  # noqa: F401
import pandas.io.formats.string  # noqa: F401
from pandas.core.arrays import DatetimeArray as _DatetimeArray

from backtest import run_backtest
from backtest.metrics import BarFacts
from backtest.accessors import ACCESSOR_NAMES, Clock, make_accessors
from contracts import BacktestOptions, BarArrays, ErrorCode, ErrorInfo, ExecutionError, Signal
from contracts.bars import ns_to_isos

from .api import SIGNAL_NAMES, OutputLimitExceeded, StrategyApi, signal_code
from . import guards, hygiene, shm
from .compiler import CompiledStrategy
from .protocol import Job, Outcome, PointOutcome
from .request_bars import RefusedRequest, bars_of_request
from .restricted import build_globals, globals_for, wrap_api

STRATEGY_FILE = "<strategy>"
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.\-+@~]+)+(?:\.py[cw]?|\.so)?")


_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
_DATA_NAMES = frozenset({"df", "data"})
_EMPTY_BARS = BarArrays(timestamp=b"", open=b"", high=b"", low=b"", close=b"", volume=b"")
_UTC = pd.DatetimeTZDtype("ns", "UTC")
_COLUMNS = pd.Index(_PRICE_COLUMNS)  # never handed out: every frame gets a deep copy


def utc_index(timestamp_ns: np.ndarray) -> pd.DatetimeIndex:
    """A new DatetimeIndex named `timestamp`, UTC, over epoch nanoseconds: what
    `pd.DatetimeIndex(ns.view("datetime64[ns]"), dtype=UTC)` gives (naive epoch-ns read as UTC,
    freq None), without its validation pass and copy (a tenth of a millisecond and 8 bytes a bar,
    for every frame and every sweep point).

    The index is new (its own DatetimeArray, name, freq and caches: what one frame's strategy sets
    on it reaches no other frame); its values are the column itself when that is read-only (the
    job's buffers: bytes, or the sealed memfd's read-only mapping), so no strategy can write
    through them into the timestamps the metrics read. A writable column is copied first.
    """
    values = timestamp_ns.view("datetime64[ns]")
    if values.flags.writeable:
        values = values.copy()
        values.flags.writeable = False
    try:
        return pd.DatetimeIndex._simple_new(_DatetimeArray._simple_new(values, dtype=_UTC), name="timestamp")
    except (AttributeError, TypeError):  # a pandas without these constructors: the public one
        return pd.DatetimeIndex(values, dtype=_UTC, name="timestamp")


def frame_of(bars: BarArrays | None) -> pd.DataFrame:
    """The DataFrame every strategy style sees: UTC DatetimeIndex named `timestamp`.

    The five columns are one float64 block (a copy; the job's buffers stay pristine): built,
    copied and sliced several times faster than five separate columns. Bars handed over in a
    sealed memfd need no copy: the block is this process's private copy-on-write mapping of
    them, pristine again for every frame (sandbox/shm.py).
    """
    bars = _EMPTY_BARS if bars is None else bars
    index = utc_index(bars.column("timestamp"))
    block = shm.frame_block(bars)
    if block is None:
        block = np.empty((len(_PRICE_COLUMNS), bars.count))
        for row, name in enumerate(_PRICE_COLUMNS):
            block[row] = bars.column(name)
    # a deep copy of a built Index: the frame's own labels, without inferring their dtype again
    return pd.DataFrame(block.T, index=index, columns=_COLUMNS.copy(deep=True), copy=False)


def global_names(code: types.CodeType) -> frozenset[str]:
    """Every global or builtin name the code (and any function nested in it) can look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= global_names(const)
    return frozenset(names)


def strategy_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == STRATEGY_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def clean_message(exc: BaseException) -> str:
    """`Type: message` with any host path replaced, so no node or library location leaks."""
    text = str(exc)
    text = _PATH.sub(lambda m: "<library>" if "/" in m.group(0)[1:] or "\\" in m.group(0) else m.group(0), text)
    name = type(exc).__name__
    return f"{name}: {text}"[:1000] if text else name


def json_safe(value: Any, limit: int) -> Any:
    """The strategy's return value as plain JSON types, or an error if it cannot be."""

    def enc(obj: Any) -> Any:
        if isinstance(obj, (np.integer,)):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, pd.Timestamp):
            return obj.isoformat()
        raise TypeError(type(obj).__name__)

    try:
        raw = msgspec.json.encode(value, enc_hook=enc)
    except (TypeError, OverflowError, msgspec.EncodeError) as exc:
        raise ExecutionError(ErrorCode.RUNTIME_ERROR,
                             f"the strategy returned a value that is not JSON-safe ({exc})") from None
    if len(raw) > limit:
        raise ExecutionError(ErrorCode.OUTPUT_LIMIT, f"the strategy's result is {len(raw)} bytes; the limit is {limit}")
    return msgspec.json.decode(raw)


def state_out(value: Any, limit: int) -> Any:
    """A hosted run's `state` after the run: a JSON-safe mapping of at most `limit` bytes."""
    if not isinstance(value, dict):
        raise ExecutionError(ErrorCode.RUNTIME_ERROR, "`state` must stay a dict (change its items, do not replace it)")
    try:
        raw = msgspec.json.encode(value)
    except (TypeError, OverflowError, msgspec.EncodeError) as exc:
        raise ExecutionError(ErrorCode.RUNTIME_ERROR, f"`state` holds a value that is not JSON-safe ({exc}): "
                             "keep str, int, float, bool, None, lists and dicts with str keys") from None
    if len(raw) > limit:
        raise ExecutionError(ErrorCode.OUTPUT_LIMIT, f"`state` is {len(raw):,} bytes as JSON; the limit is {limit:,}")
    return msgspec.json.decode(raw)


def _per_bar(value: Any, n: int) -> np.ndarray | None:
    """A Series/array/list aligned to the bars becomes one signal code per bar."""
    if isinstance(value, pd.DataFrame):
        if "signal" not in value.columns:
            return None
        value = value["signal"]
    if isinstance(value, (pd.Series, np.ndarray, list)):
        length = len(value)
        if length != n:
            raise ExecutionError(ErrorCode.RUNTIME_ERROR,
                                 f"the strategy returned {length} signals for {n} bars")
        array = value.to_numpy() if isinstance(value, pd.Series) else np.asarray(value, dtype=object)
        if array.dtype.kind in "fiu":
            # the sign of each value, NaN as 0 (np.sign of np.nan_to_num), with no float copies
            return (array > 0).view(np.int8) - (array < 0).view(np.int8)
        return np.fromiter((signal_code(v) for v in array), np.int8, n)
    return None


class Run:
    """State of one execution; `outcome()` is all that leaves the child."""

    def __init__(self, job: Job, facts: BarFacts | None = None) -> None:
        self.job = job
        self.facts = facts  # what the metrics derive from the bars alone, shared by a chunk's points
        self.compiled = CompiledStrategy.from_bytes(job.code)
        bars = _EMPTY_BARS if job.bars is None else job.bars
        # Read-only views of the job's own buffers: what signals and metrics are computed from,
        # whatever the strategy does to the frames it is given.
        self.columns = {name: bars.column(name) for name in _PRICE_COLUMNS}
        self.frame = frame_of(bars)
        n = len(self.frame)
        self.index_ns = bars.column("timestamp")
        self.api = StrategyApi(n, self.index_ns, job.limits)
        # What the accessors answer as of: in a backtest the bar being evaluated (the first bar
        # for the one vectorized call, bar i in a walk), so neither bars nor reference facts
        # after it exist; elsewhere everything the node handed in (None).
        self.clock = Clock(int(self.index_ns[0]) if job.kind == "backtest" and n else None)
        self.per_bar: np.ndarray | None = None
        self.raw_signals: Any = None  # a backtest's vectorized return, for its warm-up
        self.result: Any = None
        self.needs_walk = False  # the probe returned one signal: walk in a fresh child
        # Every call gets its own copy of the parameters, decoded afresh (nested values too).
        self._params = msgspec.msgpack.encode(job.parameters)
        # A hosted run's `state` (node/hosting/state.py): its own copy, read back after the run.
        self.state = None if job.state is None else msgspec.msgpack.decode(msgspec.msgpack.encode(job.state))

    # -- execution ----------------------------------------------------------------------
    def _globals(self, with_data: bool) -> dict[str, Any]:
        return build_globals(self._api_values(with_data), self.api.write_line)

    def _api_values(self, with_data: bool) -> dict[str, Any]:
        api = {
            "signal": self.api.signal,
            "indicator": self.api.indicator,
            "log": self.api.log,
            "params": self.fresh_params(),
            "parameters": self.fresh_params(),
            "symbol": self.job.symbol,
            "timeframe": self.job.timeframe,
        }
        if self.state is not None:
            api["state"] = self.state
        if self.job.env is not None:
            api["env"] = types.MappingProxyType(dict(self.job.env))
        if self.job.secrets is not None:
            api["secrets"] = types.MappingProxyType(dict(self.job.secrets))
        if with_data and not _DATA_NAMES.isdisjoint(global_names(self.compiled.code)):
            api["df"] = self.frame.copy()
            api["data"] = api["df"]
        if (self.job.kind == "classify" or self.compiled.style == "classify"
                or not ACCESSOR_NAMES.isdisjoint(global_names(self.compiled.code))):
            api.update(self._accessors())
        return api

    def fresh_params(self) -> dict[str, Any]:
        return msgspec.msgpack.decode(self._params)

    def _accessors(self) -> dict[str, Any]:
        frames = {(sym, self.job.timeframe): frame_of(arr) for sym, arr in (self.job.universe or {}).items()}
        if self.job.symbol and (self.job.symbol, self.job.timeframe) not in frames:
            frames[(self.job.symbol, self.job.timeframe)] = self.frame
        return make_accessors(frames, self.job.timeframe, refdata=self.job.refdata, clock=self.clock)

    def execute(self) -> None:
        style = self.compiled.style
        walking = self.job.kind == "backtest" and style == "function"
        if walking and self.job.walk:
            self._walk()
            return
        env = self._globals(with_data=style == "script" or not walking)
        exec(self.compiled.code, env)
        _raise_violation()
        if style == "function":
            self._call_strategy(env["strategy"], walking)
        elif style == "classify":
            verdict = env["classify_symbol"](self.job.symbol)
            _raise_violation()
            self.result = json_safe(verdict, self.job.limits.result_bytes)
        else:
            ret = env.get("result")
            if ret is not None:
                self.result = json_safe(ret, self.job.limits.result_bytes)

    def _call_strategy(self, fn: Any, walking: bool) -> None:
        wants_params = getattr(getattr(fn, "__code__", None), "co_argcount", 1) >= 2
        n = len(self.frame)
        # The strategy may have the frame itself: signals and metrics use self.columns, and a
        # walk (the only reader of self.frame after this call) runs in a fresh child.
        data = self.frame
        ret = fn(data, self.fresh_params()) if wants_params else fn(data)
        hygiene.reset_numpy()
        if walking and getattr(self.job.options, "mode", None) == "backtesting_py":
            self.raw_signals = ret  # only the compat warm-up reads it; otherwise freed before the engine runs
        vector = _per_bar(ret, n) if walking else None  # computed once: _take uses it too
        if not walking or vector is not None:
            self._take(ret, n, vector)
            return
        # One signal for the last bar: the strategy is walked bar by bar. This call saw every
        # bar, so the walk never runs in this process (whatever this call left behind: numpy's
        # error callback, suspended generators, classes, caches): the node sends the job again
        # with `walk=True` to a fresh child (see _walk).
        self.raw_signals = None
        self.needs_walk = True

    def _walk(self) -> None:
        """Call the strategy once per bar, each call on the bars up to its own.

        Every call gets its own module globals (the module is executed again), its own
        parameters and its own frame, so nothing but what earlier bars' calls left in the
        process can reach it, and those saw fewer bars. What the module's top level emits
        (log lines) counts once: the first execution's output is kept, later ones' dropped.
        """
        n = len(self.frame)
        codes = np.zeros(n, dtype=np.int8)
        api = self.api
        values = self._api_values(with_data=False)
        del values["params"], values["parameters"]
        shared = wrap_api(values)  # immutable wrappers of the API functions: reused, not state
        for i in range(n):
            api.n_bars, api.floor = i + 1, i  # signal() sees this call's bars and marks only bar i
            self.clock.ns = int(self.index_ns[i])  # accessors: nothing after bar i
            lines, log_bytes = len(api.logs), api._log_bytes
            env = globals_for({**shared, "params": self.fresh_params(), "parameters": self.fresh_params()},
                              api.write_line)
            exec(self.compiled.code, env)
            _raise_violation()
            if i:
                del api.logs[lines:]
                api._log_bytes = log_bytes
            fn = env["strategy"]
            data = self.frame.iloc[: i + 1].copy()
            wants_params = getattr(getattr(fn, "__code__", None), "co_argcount", 1) >= 2
            ret = fn(data, self.fresh_params()) if wants_params else fn(data)
            hygiene.reset_numpy()
            _raise_violation()
            codes[i] = signal_code(ret.get("signal") if isinstance(ret, dict) else ret)
        api.n_bars, api.floor = n, 0
        self.per_bar = codes

    def _take(self, ret: Any, n: int, vector: np.ndarray | None = None) -> None:
        vector = _per_bar(ret, n) if vector is None else vector
        if vector is not None:
            self.per_bar = vector
            return
        if isinstance(ret, dict):
            kind = ret.get("signal", ret.get("type", ret.get("action")))
            if kind is not None and n:
                self.api.signal(kind, ret.get("reason"), ret.get("price"), ret.get("quantity"))
            self.result = json_safe(ret, self.job.limits.result_bytes)
        elif isinstance(ret, str):
            if n == 0:
                signal_code(ret)
            else:
                self.api.signal(ret)
            self.result = ret
        elif ret is not None:
            self.result = json_safe(ret, self.job.limits.result_bytes)

    # -- shaping ------------------------------------------------------------------------
    def codes(self) -> np.ndarray:
        if self.per_bar is not None:
            codes = self.per_bar.copy()
            for i, (code, *_r) in self.api.marks.items():
                codes[i] = code
            return codes
        return self.api.per_bar()

    def signals(self, codes: np.ndarray) -> list[Signal]:
        close = self.columns["close"]
        out: list[Signal] = []
        if self.per_bar is None:
            positions = sorted(self.api.marks)
        else:
            positions = sorted(set(np.flatnonzero(codes != 0).tolist()) | set(self.api.marks))
        if len(positions) > self.job.limits.signals:
            raise ExecutionError(ErrorCode.OUTPUT_LIMIT,
                                 f"{len(positions)} signals; the limit is {self.job.limits.signals}")
        stamps = ns_to_isos(self.index_ns[positions]) if positions else []
        for i, stamp in zip(positions, stamps):
            code, reason, price, qty = self.api.marks.get(i, (int(codes[i]), None, None, None))
            px = float(close[i]) if price is None else price
            out.append(Signal(
                timestamp=stamp, type=SIGNAL_NAMES[code],
                price=px if math.isfinite(px) else None, quantity=qty, reason=reason,
            ))
        return out

    def performance(self, codes: np.ndarray, options: BacktestOptions | None) -> Any:
        """Metrics of the signals. An execute without signals has none; a backtest always has
        them (zero trades is a result), with the warm-up of `warmup()` in compat mode."""
        backtesting = self.job.kind == "backtest"
        if not codes.any() and not (backtesting and len(codes)):
            return None
        options = options or _EXECUTE_OPTIONS
        warmup = self.warmup() if backtesting and options.mode == "backtesting_py" else 0
        reasons = {i: m[1] for i, m in self.api.marks.items() if m[1]}
        c = self.columns
        return run_backtest(
            self.index_ns, c["open"], c["high"], c["low"], c["close"], c["volume"], codes, options,
            reasons=reasons, warmup=warmup,
            indicators=self.api.indicators if backtesting and (options.equity_points or options.per_bar) else None,
            facts=self.facts if self.facts is not None and self.facts.of(self.index_ns, c["close"]) else None,
        )

    def warmup(self) -> int:
        """Bars before the strategy is defined, as backtesting.py counts its warm-up: the first
        bar where the vectorized signal series is defined (not NaN/None) and every full-length
        `indicator()` series has a value, whichever is latest. A walked per-bar strategy and a
        script that registers no indicator have no warm-up (0)."""
        n = len(self.frame)
        if self.job.walk:
            return 0  # the walk's last call saw every bar: its indicators must not pick the start
        firsts = [0]
        raw = self.raw_signals
        if isinstance(raw, pd.DataFrame):
            raw = raw["signal"] if "signal" in raw.columns else None
        if isinstance(raw, (pd.Series, np.ndarray, list)) and len(raw) == n and n:
            values = raw.to_numpy() if isinstance(raw, pd.Series) else np.asarray(raw, dtype=object)
            defined = np.flatnonzero(~pd.isna(values))
            firsts.append(int(defined[0]) if defined.size else n)
        for series in self.api.indicators.values():
            if len(series) == n and n:
                firsts.append(next((i for i, v in enumerate(series) if v is not None), n))
        return min(max(firsts), max(n - 1, 0))


# An execute reply carries metrics and trades, not an equity curve: that is what a backtest is for,
# and the curve would be most of a small reply's bytes and of its run's time.
_EXECUTE_OPTIONS = BacktestOptions(equity_points=0)


def _raise_violation() -> None:
    """A policy violation stays fatal even when the strategy caught the exception."""
    violation = guards.first_violation()
    if violation is not None:
        raise violation


def run_points(job: Job) -> Outcome:
    """A sweep chunk: one backtest per parameter set of `job.points`, in this one child.

    Each point is a separate `run` (fresh module globals, API and frame), and between two points
    the process is scrubbed back to its baseline (sandbox.hygiene), so points cannot see or
    change each other's state. A point whose strategy must be walked comes back `walk=True`:
    the node walks it in a fresh child. After a memory-limit failure, or a scrub that cannot
    show the process clean, the rest is not run (the soft address-space limit was lifted to
    report it); the node runs points missing from `points` on their own, each in a fresh child.
    """
    started = time.perf_counter()
    rows: list[PointOutcome] = []
    points = job.points or []
    facts = _bar_facts(job)
    for k, parameters in enumerate(points):
        if k and not hygiene.scrub():
            break
        one = run(msgspec.structs.replace(job, parameters=parameters, points=None), facts=facts)
        rows.append(PointOutcome(performance=one.performance, error=one.error,
                                 signals_count=one.signals_count, walk=one.walk))
        if one.error is not None and one.error.code == ErrorCode.MEMORY_LIMIT:
            break
    return Outcome(success=True, points=rows, run_ms=(time.perf_counter() - started) * 1000.0)


def _bar_facts(job: Job) -> BarFacts | None:
    """What every point's metrics would derive from the chunk's bars alone (backtest.metrics.
    BarFacts), computed here, before any strategy of the chunk runs, from the job's read-only
    columns; it never reaches strategy code. None where the points would not use it."""
    options = job.options
    bars = job.bars
    if bars is None or bars.count < 3 or options is None or options.mode != "native":
        return None
    facts = BarFacts(bars.column("timestamp"), bars.column("close"))
    if options.periods_per_year is None:
        facts.periods_per_year()
    facts.market(0)  # native backtests in the sandbox have no warm-up (Run.performance)
    return facts


def run(job: Job, facts: BarFacts | None = None) -> Outcome:
    """Execute one job; every failure becomes an Outcome with an error code. `facts`: a sweep
    chunk's BarFacts of `job.bars` (run_points)."""
    if job.points is not None and job.kind == "backtest":
        return run_points(job)
    started = time.perf_counter()
    bar_count = 0
    if job.request is not None:  # a warm run: its bars are decoded here (sandbox/request_bars.py)
        try:
            bars = bars_of_request(job.request, job.request_kind)
        except (RefusedRequest, MemoryError):
            return Outcome(success=False, invalid_request=True, error=ErrorInfo(
                code=ErrorCode.INVALID_REQUEST, message="invalid request"))
        job = msgspec.structs.replace(job, bars=bars, request=None)
        bar_count = bars.count
    guards.reset_violations()
    run_state: Run | None = None
    try:
        run_state = Run(job, facts)
        try:
            run_state.execute()
        except OutputLimitExceeded:
            pass
        hygiene.reset_numpy()  # nothing the strategy left open applies to the signal/metric code
        _raise_violation()
        api = run_state.api
        if api.exceeded:
            raise ExecutionError(ErrorCode.OUTPUT_LIMIT, f"output limit reached: {api.exceeded}")
        if run_state.needs_walk:
            return Outcome(success=True, walk=True, run_ms=(time.perf_counter() - started) * 1000.0)
        codes = run_state.codes()
        backtesting = job.kind == "backtest"
        outcome = Outcome(
            success=True,
            signals=[] if backtesting else run_state.signals(codes),
            indicators={} if backtesting else api.indicators,
            performance=run_state.performance(codes, job.options if backtesting else None),
            result=run_state.result,
            logs=api.logs,
            signals_count=int(np.count_nonzero(codes)),
        )
        if job.state is not None:
            outcome.state = state_out(run_state.state, job.limits.state_bytes)
    except MemoryError:
        from .lockdown import release_memory_headroom

        release_memory_headroom()
        outcome = _failed(ErrorCode.MEMORY_LIMIT, f"the strategy exceeded its memory limit of {job.memory_mb} MB", None, run_state)
    except ExecutionError as exc:
        line = exc.line if exc.line is not None else strategy_line(exc.__traceback__)
        outcome = _failed(exc.code, exc.message, line, run_state)
    except RecursionError as exc:
        outcome = _failed(ErrorCode.RUNTIME_ERROR, "RecursionError: maximum recursion depth exceeded",
                          strategy_line(exc.__traceback__), run_state)
    except OutputLimitExceeded as exc:
        outcome = _failed(ErrorCode.OUTPUT_LIMIT, f"output limit reached: {exc}", None, run_state)
    except BaseException as exc:  # noqa: BLE001 - anything the strategy raises is its error
        outcome = _failed(ErrorCode.RUNTIME_ERROR, clean_message(exc), strategy_line(exc.__traceback__), run_state)
    outcome.run_ms = (time.perf_counter() - started) * 1000.0
    outcome.bar_count = bar_count
    return outcome


def _failed(code: ErrorCode, message: str, line: int | None, state: Run | None) -> Outcome:
    logs = state.api.logs[-100:] if state is not None else []
    return Outcome(success=False, error=ErrorInfo(code=code, message=message, line=line), logs=logs)
