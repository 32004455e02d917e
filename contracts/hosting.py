"""Hosted strategies: the registry, deployments, runs and their control messages.

Control subjects (same micro service and queue group as execute; the tenant is the verified
NATS identity of the request, never a body field):

| subject | request -> reply |
|---|---|
| `strategy.v1.strategies.put` | StrategyPut -> StrategyReply (new version; validated like `validate`) |
| `strategy.v1.strategies.get` | StrategyRef -> StrategyReply (latest, or `version`) |
| `strategy.v1.strategies.list` | StrategyRef (name ignored) -> StrategyReply (`strategies`) |
| `strategy.v1.strategies.versions` | StrategyRef -> StrategyReply (`versions`) |
| `strategy.v1.strategies.delete` | StrategyRef -> StrategyReply |
| `strategy.v1.deployments.create` | DeploymentCreate -> DeploymentReply |
| `strategy.v1.deployments.update` | DeploymentUpdate -> DeploymentReply |
| `strategy.v1.deployments.get|pause|resume|stop|delete|run` | DeploymentRef -> DeploymentReply |
| `strategy.v1.deployments.list` | DeploymentRef (id ignored) -> DeploymentReply (`deployments`) |
| `strategy.v1.deployments.runs` | DeploymentRef -> DeploymentReply (`runs`, newest last) |
| `strategy.v1.deployments.history` | DeploymentRef -> DeploymentReply (`history`: its changes, oldest first) |
| `strategy.v1.deployments.deploy` | DeploymentDeploy -> DeploymentReply (a new version + create or update) |
| `strategy.v1.deployments.state` | DeploymentRef -> DeploymentReply (`states`: the current `state` per symbol) |
| `strategy.v1.deployments.logs` | DeploymentRef -> DeploymentReply (`logs`: its last `limit` log lines, newest last) |

Results: `signals.<tenant>.<deployment>.<symbol>` (stream SIGNALS, one `Signal` per run that
calls for one, `Nats-Msg-Id` = the trigger id), `strategy.logs.<tenant>.<deployment>` (stream
STRATEGY_LOGS, one `RunLogs` per run), run records and statuses in Key-Value (node/hosting/).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from . import schedule as forms
from .errors import ErrorInfo
from .execute import Code, MemoryMb, Parameters, Signal, TimeoutMs
from .values import check_parameters

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
SymbolName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]([A-Za-z0-9_.-]{0,62}[A-Za-z0-9_-])?$")]
Timeframe = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,16}$")]
Description = Annotated[str, msgspec.Meta(max_length=1024)]
Overlap = Literal["skip", "queue_one", "allow"]
Desired = Literal["running", "paused", "stopped"]
State = Literal["pending", "running", "paused", "stopped", "error"]
RunStatus = Literal["ok", "error", "skipped"]

MAX_DEPLOYMENT_SYMBOLS = 100
MAX_LOOKBACK = 100_000
DEFAULT_LOOKBACK = 500
MAX_STATE_BYTES = 64 * 1024  # a deployment's `state` mapping, JSON-encoded
MAX_ENV_ENTRIES = 64
MAX_DEPLOYMENT_SECRETS = 32
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
EnvValue = Annotated[str, msgspec.Meta(max_length=4096)]
# A deployment's plain environment (read-only `env` in the strategy) and the names of the
# tenant's secrets its runs get (read-only `secrets`; contracts/secrets.py).
Env = Annotated[dict[EnvName, EnvValue], msgspec.Meta(max_length=MAX_ENV_ENTRIES)]
# A schedule (JetStream message schedules, node/hosting/schedules.py): a 6-field cron
# (`sec min hour day month weekday`, e.g. "0 */5 9-15 * * MON-FRI"), `@every <duration>`
# ("@every 30s", "@every 5m") or `@at <RFC 3339 time>`, in the IANA zone `tz` (UTC when left out),
# or an offset from the `session`'s open or close ("open+5m", "close-10m"): contracts/schedule.py.
Schedule = Annotated[str, msgspec.Meta(min_length=2, max_length=128)]
# Start and stop times per day in the schedule's zone, optionally on some weekdays only
# ("09:20-15:10", "MON-FRI 09:20-15:10"): fires outside are skipped and counted in the status.
WindowText = Annotated[str, msgspec.Meta(max_length=128)]
SessionName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{3,8}$")]
TimeZone = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_+/-]{0,63}$")]
# A fire older than this when a node takes it is skipped and recorded (after an outage).
CatchupS = Annotated[int, msgspec.Meta(ge=1, le=7 * 86_400)]
DEFAULT_CATCHUP_S = 300
SecretNames = Annotated[list[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]],
                        msgspec.Meta(max_length=MAX_DEPLOYMENT_SECRETS)]


class StrategyPut(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    code: Code
    language: Annotated[str, msgspec.Meta(max_length=32)] = "python"
    description: Description = ""


class StrategyRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class StrategyVersion(msgspec.Struct, kw_only=True):
    """One stored version of a strategy (versions are immutable)."""

    name: str
    version: int
    code: str
    style: str
    language: str = "python"
    description: str = ""
    created_at: str = ""


class StrategySummary(msgspec.Struct, kw_only=True):
    name: str
    latest: int
    versions: int
    style: str = ""
    created_at: str = ""


class StrategyReply(msgspec.Struct, kw_only=True):
    ok: bool = False
    strategy: StrategyVersion | None = None
    strategies: list[StrategySummary] = []
    versions: list[StrategyVersion] = []
    # strategies.put: older versions this put dropped (beyond MAX_VERSIONS_PER_STRATEGY, run by
    # no deployment: node/hosting/quotas.py), oldest first; never silent.
    dropped_versions: list[int] = []
    error: ErrorInfo | None = None
    node_id: str = ""


class DeploymentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: Name
    strategy: Name
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None  # None: the latest at creation
    symbols: Annotated[list[SymbolName], msgspec.Meta(min_length=1, max_length=MAX_DEPLOYMENT_SYMBOLS)]
    timeframe: Timeframe
    lookback: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOOKBACK)] = DEFAULT_LOOKBACK
    parameters: Parameters = {}
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    overlap: Overlap = "skip"
    desired: Desired = "running"
    # Opt-in: runs of this deployment (one owner, one version) reuse a warm sandbox worker of
    # their own instead of a fresh process (needs a node with TENANT_WARM_RUNS > 0).
    warm: bool = False
    env: Env = {}
    secrets: SecretNames = []
    # With a schedule the deployment runs on its fires (each symbol on its newest stored bar),
    # not on every new bar.
    schedule: Schedule | None = None
    tz: TimeZone | None = None
    catchup_s: CatchupS = DEFAULT_CATCHUP_S
    # Fires only while this exchange is in session (exchange_calendars MIC, e.g. XNYS, XBOM;
    # XNSE names XBOM's calendar): not outside its hours, on weekends or on its holidays. With
    # an offset schedule ("open+5m") the session gives the instants instead.
    session: SessionName | None = None
    window: WindowText | None = None

    def __post_init__(self) -> None:
        check_parameters(self.parameters)
        check_schedule(self.schedule, self.tz, self.window, self.session)
        if len(set(self.secrets)) != len(self.secrets):
            raise ValueError("secrets repeat: name each secret once")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols repeat: name each symbol once")


class DeploymentUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields given change; `version` may move the deployment to another version."""

    id: Name
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    symbols: Annotated[list[SymbolName], msgspec.Meta(min_length=1, max_length=MAX_DEPLOYMENT_SYMBOLS)] | None = None
    lookback: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOOKBACK)] | None = None
    parameters: Parameters | None = None
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    overlap: Overlap | None = None
    warm: bool | None = None
    env: Env | None = None
    secrets: SecretNames | None = None
    # "" removes the schedule (back to every new bar; its tz, session and window go with it)
    schedule: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    tz: TimeZone | None = None
    catchup_s: CatchupS | None = None
    # "" removes the session or the window; the combination is checked against the deployment
    session: Annotated[str, msgspec.Meta(pattern=r"^([A-Z0-9]{3,8})?$")] | None = None
    window: WindowText | None = None
    timeframe: Timeframe | None = None

    def __post_init__(self) -> None:
        if self.schedule:
            check_schedule(self.schedule, self.tz, forms_only=True)
        elif self.tz is not None:
            check_schedule(None, self.tz, forms_only=True)
        if self.window:
            check_window(self.window)
        if self.secrets is not None and len(set(self.secrets)) != len(self.secrets):
            raise ValueError("secrets repeat: name each secret once")
        if self.parameters is not None:
            check_parameters(self.parameters)
        if self.symbols is not None and len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols repeat: name each symbol once")


class DeploymentRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: Name | None = None
    # runs, history: how many records, newest (100); logs: how many log lines, newest (100)
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    symbol: SymbolName | None = None  # state only: that symbol's state alone (default: every symbol)


class Deployment(msgspec.Struct, kw_only=True):
    id: str
    strategy: str
    version: int
    symbols: list[str]
    timeframe: str
    lookback: int
    parameters: dict[str, Any] = {}
    timeout_ms: int | None = None
    memory_mb: int | None = None
    overlap: Overlap = "skip"
    desired: Desired = "running"
    warm: bool = False
    created_at: str = ""
    updated_at: str = ""
    env: dict[str, str] = {}
    secrets: list[str] = []
    schedule: str | None = None
    tz: str | None = None
    catchup_s: int = DEFAULT_CATCHUP_S
    session: str | None = None
    window: str | None = None
    # Who made this revision and how (history): the verified NATS account/user ("local" on a
    # server without accounts) and the operation (create, update, deploy, pause, resume, stop).
    changed_by: str = ""
    change: str = ""


class RunRecord(msgspec.Struct, kw_only=True):
    """One run of a deployment for one trigger (kept with retention)."""

    run_id: str  # the trigger id: deployment, version, symbol and bar time (or manual-<id>)
    deployment: str
    version: int
    symbol: str
    bar_time: str
    status: RunStatus
    error: ErrorInfo | None = None
    signal: Signal | None = None
    started_at: str = ""
    duration_ms: float = 0.0
    node_id: str = ""
    manual: bool = False
    note: str | None = None  # e.g. why a run was skipped
    delivery: int = 1  # which delivery of the trigger ran (>1: an earlier one's node failed or died)


class DeploymentStatus(msgspec.Struct, kw_only=True):
    id: str
    state: State
    version: int = 0
    last_error: ErrorInfo | None = None
    last_error_at: str | None = None
    runs: int = 0
    errors: int = 0
    skipped: int = 0
    signals: int = 0
    last_run: RunRecord | None = None
    updated_at: str = ""
    # How many times this status has been written: each write adds 1 under compare-and-set, so
    # of two copies the higher `seq` is the newer (without trusting any node's clock).
    seq: int = 0
    # Scheduled deployments: the next fire that will run (after the window and the session),
    # set at create, update and resume and after each fire; None while paused or stopped, or
    # when no fire is left (a past @at). In the schedule's zone (UTC: "Z").
    next_fire: str | None = None
    last_fire: str | None = None
    fires_outside: int = 0  # fires skipped outside the window or the session
    fire_note: str | None = None  # why the last skipped fire was skipped


class DeploymentChange(msgspec.Struct, kw_only=True):
    """One revision of a deployment's desired state (KV DEPLOYMENTS history, oldest first)."""

    revision: int
    at: str  # when it was made (the record's updated_at)
    by: str  # who: the verified NATS identity of the request ("local" without accounts)
    change: str  # create, update, deploy, pause, resume, stop
    changed: list[str] = []  # fields that differ from the previous revision
    deployment: Deployment


class DeploymentView(msgspec.Struct, kw_only=True):
    deployment: Deployment
    status: DeploymentStatus | None = None


class DeploymentReply(msgspec.Struct, kw_only=True):
    ok: bool = False
    deployment: Deployment | None = None
    status: DeploymentStatus | None = None
    deployments: list[DeploymentView] = []
    runs: list[RunRecord] = []
    run_id: str | None = None  # deployments.run: the manual trigger's id (one per symbol: the first)
    history: list[DeploymentChange] = []  # deployments.history
    history_truncated: bool = False  # older changes left out: the reply had to fit max_payload
    strategy_version: int | None = None  # deployments.deploy: the version it stored
    dropped_versions: list[int] = []  # deployments.deploy: older versions that put dropped (StrategyReply)
    # deployments.state: {symbol: the strategy's `state` after its last successful run} (symbols
    # that never ran have none); symbols whose state did not fit the reply's max_payload are in
    # `states_omitted`: ask for each with `symbol`.
    states: dict[str, dict[str, Any]] = {}
    states_omitted: list[str] = []
    # deployments.logs: the runs' log messages holding the last `limit` lines, newest last; the
    # oldest lines are left out first (`logs_truncated`) when the reply must fit max_payload.
    logs: list[RunLogs] = []
    logs_truncated: bool = False
    error: ErrorInfo | None = None
    node_id: str = ""


class DeploymentDeploy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Upload `code` as a new version of strategy `strategy` and create deployment `id` on it, or
    move an existing `id` to it (then only the options given change; `timeframe`, `symbols`
    too). Every option is checked before the version is stored."""

    strategy: Name
    code: Code
    description: Description = ""
    id: Name | None = None  # default: the strategy's name
    symbols: Annotated[list[SymbolName], msgspec.Meta(min_length=1, max_length=MAX_DEPLOYMENT_SYMBOLS)] | None = None
    timeframe: Timeframe | None = None
    lookback: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOOKBACK)] | None = None
    parameters: Parameters | None = None
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    overlap: Overlap | None = None
    desired: Desired | None = None
    warm: bool | None = None
    env: Env | None = None
    secrets: SecretNames | None = None
    schedule: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    tz: TimeZone | None = None
    catchup_s: CatchupS | None = None
    session: Annotated[str, msgspec.Meta(pattern=r"^([A-Z0-9]{3,8})?$")] | None = None
    window: WindowText | None = None


class Trigger(msgspec.Struct, kw_only=True):
    """A work item on STRATEGY_TRIGGERS (published by nodes only; tenants cannot publish there)."""

    tenant: str
    deployment: str
    version: int
    symbol: str
    timeframe: str
    bar_ns: int
    manual: bool = False


class RunLogs(msgspec.Struct, kw_only=True):
    """One run's captured log lines on `strategy.logs.<tenant>.<deployment>`."""

    run_id: str
    deployment: str
    symbol: str
    bar_time: str
    lines: list[str] = []
    truncated: bool = False


_CRON_FIELD = r"[A-Za-z0-9*/,?LW#-]+"


def check_window(window: str) -> None:
    forms.parse_window(window)


def check_schedule(schedule: str | None, tz: str | None, window: str | None = None, session: str | None = None,
                   forms_only: bool = False) -> None:
    """The forms the server takes (it checks them again on publish), `tz` an IANA zone, and how
    `tz`, `window` and `session` go with the schedule (not checked with `forms_only`). Every
    error names the field it is about."""
    import re
    import zoneinfo

    if tz is not None:
        if schedule is None and not forms_only:
            raise ValueError("tz applies to a schedule only: give `schedule` too")
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"tz {tz!r} is not an IANA time zone (e.g. Asia/Kolkata)") from None
    if not schedule:
        if forms_only:
            return
        if window is not None:
            raise ValueError("window applies to a schedule only: give `schedule` too")
        if session is not None:
            raise ValueError("session applies to a schedule only: give `schedule` too")
        return
    text = schedule.strip()
    offset = forms.parse_offset(text)
    if window is not None:
        check_window(window)
    if offset is not None:
        if forms_only:
            return
        if session is None:
            raise ValueError(f"schedule {text!r} is an offset from a session's open or close: give `session` "
                             "(e.g. XNYS)")
        if tz is not None:
            raise ValueError(f"tz does not apply to the offset schedule {text!r}: it follows the session's own "
                             "calendar and zone (leave tz out)")
        if window is not None:
            raise ValueError(f"window does not apply to the offset schedule {text!r} (it fires once a session)")
        return
    if tz is not None and text.startswith("@at "):
        raise ValueError("tz applies to a cron schedule only; @at is zone-free (leave tz out)")
    if tz is not None and text.startswith("@every ") and window is None and not forms_only:
        raise ValueError("tz applies to a cron schedule only; @every is zone-free (leave tz out, "
                         "or give `window`, whose times it is the zone of)")
    if window is not None and text.startswith("@at "):
        raise ValueError("window applies to a cron or @every schedule, not to a one-off @at")
    if text.startswith("@every "):
        if not re.fullmatch(r"@every (\d+(\.\d+)?(ns|us|ms|s|m|h))+", text):
            raise ValueError(f"schedule {schedule!r}: `@every` takes a duration such as 30s, 5m or 1h30m")
    elif text.startswith("@at "):
        from datetime import datetime

        try:
            datetime.fromisoformat(text[4:].replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"schedule {schedule!r}: `@at` takes an RFC 3339 time") from None
    elif text.startswith("@"):
        raise ValueError(f"schedule {schedule!r}: use a 6-field cron, `@every <duration>` or `@at <time>`")
    else:
        fields = text.split()
        if len(fields) != 6 or not all(re.fullmatch(_CRON_FIELD, f) for f in fields):
            raise ValueError(f"schedule {schedule!r}: a cron needs 6 fields (sec min hour day month weekday)")
