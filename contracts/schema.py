"""JSON Schema for every v1 message, generated from the Structs (`python -m contracts.schema`).

The committed files in contracts/schema/ are what non-Python clients code against; a test fails
when they drift from the Structs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from .backtest import BacktestRequest, BacktestResult
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
from .quotas import QuotaReply, QuotaRequest
from .secrets import SecretPut, SecretRef, SecretReply
from .screen import ScreenRequest, ScreenResult
from .validate import ValidateRequest, ValidateResult

SCHEMA_DIR = Path(__file__).with_name("schema")

MESSAGES: dict[str, type] = {
    "ExecuteRequest": ExecuteRequest,
    "ExecuteResult": ExecuteResult,
    "ValidateRequest": ValidateRequest,
    "ValidateResult": ValidateResult,
    "BacktestRequest": BacktestRequest,
    "BacktestResult": BacktestResult,
    "ScreenRequest": ScreenRequest,
    "ScreenResult": ScreenResult,
    "Health": Health,
    "StrategyPut": StrategyPut,
    "StrategyRef": StrategyRef,
    "StrategyReply": StrategyReply,
    "DeploymentCreate": DeploymentCreate,
    "DeploymentDeploy": DeploymentDeploy,
    "DeploymentUpdate": DeploymentUpdate,
    "DeploymentRef": DeploymentRef,
    "DeploymentReply": DeploymentReply,
    "RunLogs": RunLogs,
    "SecretPut": SecretPut,
    "SecretRef": SecretRef,
    "SecretReply": SecretReply,
    "QuotaRequest": QuotaRequest,
    "QuotaReply": QuotaReply,
}


def render(name: str) -> str:
    schema = msgspec.json.schema(MESSAGES[name])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://strategy-exec/schema/v1/{name}.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MESSAGES:
        path = directory / f"{name}.json"
        path.write_text(render(name))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(path)
