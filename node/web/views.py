"""What the browser gets of hosted-strategy objects: JSON-safe views, names only for env and
secrets (an env value may hold something private; a secret value never leaves a node at all)."""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.hosting import Deployment, DeploymentStatus, RunRecord


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value) if value is not None else None


def deployment(dep: Deployment) -> dict[str, Any]:
    out = builtins(dep)
    out["env"] = sorted(dep.env)  # names only
    out["secrets"] = sorted(dep.secrets)  # names only (values are never in a Deployment)
    return out


def status(st: DeploymentStatus | None) -> dict[str, Any] | None:
    return builtins(st)


def run(record: RunRecord) -> dict[str, Any]:
    return builtins(record)


def row(dep: Deployment, st: DeploymentStatus | None, last_signal: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of the Deployments page."""
    last_run = st.last_run if st else None
    if last_signal is None and last_run is not None and last_run.signal is not None:
        last_signal = {"symbol": last_run.symbol, **builtins(last_run.signal)}
    return {
        "id": dep.id, "strategy": dep.strategy, "version": dep.version, "symbols": dep.symbols,
        "timeframe": dep.timeframe, "desired": dep.desired, "schedule": dep.schedule,
        "state": st.state if st else dep.desired,
        "next_fire": st.next_fire if st else None,
        "last_run": builtins(last_run),
        "last_signal": last_signal,
        "runs": st.runs if st else 0, "errors": st.errors if st else 0,
        "last_error": builtins(st.last_error) if st else None,
        # which write of its status this is: the page keeps the newest status it has seen, so an
        # action's reply (Run now carries none) never replaces a newer one from the live watch
        "seq": st.seq if st else None,
    }
