"""Run logs: one `RunLogs` message per run on `strategy.logs.<tenant>.<deployment>`.

Stream STRATEGY_LOGS keeps them for RETENTION_S (node/hosting/streams.py); `Nats-Msg-Id` is the
trigger id, so a redelivered run never logs twice. A run's lines are cut to fit the server's
max_payload (node/sizing.py): the newest lines are kept and `truncated` says so.
"""

from __future__ import annotations

from typing import Any

import msgspec

from contracts import subjects
from contracts.hosting import RunLogs

from .. import sizing
from . import naming

_encoder = msgspec.json.Encoder()


def fitted(nc: Any, logs: RunLogs, headers: dict[str, str]) -> bytes:
    body = _encoder.encode(logs)
    while not sizing.fits(nc, body, headers) and logs.lines:
        logs.lines = logs.lines[len(logs.lines) // 2 + 1:] if len(logs.lines) > 1 else []
        logs.truncated = True
        body = _encoder.encode(logs)
    return body


async def publish(js: Any, nc: Any, tenant: str, logs: RunLogs) -> None:
    headers = {"Nats-Msg-Id": f"{logs.run_id}.logs", subjects.CONTENT_TYPE: subjects.JSON,
               "Strategy-Run-Id": logs.run_id}
    body = fitted(nc, logs, headers)
    sizing.check(nc, body, headers, "the run's logs")
    await js.publish(naming.logs_subject(tenant, logs.deployment), body, headers=headers)
