"""A deployment's `state`: a JSON-safe mapping a strategy reads and changes, kept between runs.

Each symbol of a deployment is its own sequence of runs, with its own `state` (KV
DEPLOYMENT_STATE key `<tenant>.<deployment>.<symbol>`): the runs of one bar on two symbols
never contend for one mapping.

The strategy sees a global `state` (a dict, `{}` on the first run) and changes its items; after
a successful run the node stores what it became (JSON, at most `MAX_STATE_BYTES` = 64 KiB, else
the run fails with OUTPUT_LIMIT and the stored state is unchanged). A failed run changes
nothing. The KV entry keeps the run that wrote it and the state before that run, so a trigger
redelivered after its node died between saving the state and acking starts again from the state
it started from (a run is idempotent by its trigger id; its state change counts once).

Concurrent runs follow the overlap policy: `skip` and `queue_one` never run two at once per
deployment; with `allow` the state is written with compare-and-set, and a run whose state
changed underneath it keeps the stored state and says so in its run record (`note`).
"""

from __future__ import annotations

from typing import Any

import msgspec
import nats.js.errors

from contracts.hosting import MAX_STATE_BYTES

from . import naming, streams


class StateEntry(msgspec.Struct, kw_only=True):
    state: dict[str, Any] = {}
    run: str = ""  # the trigger id of the run that wrote it
    before: dict[str, Any] = {}  # the state that run started from


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StateEntry)


class StateStore:
    def __init__(self, kv: Any) -> None:
        self.kv = kv

    async def read(self, tenant: str, deployment: str, symbol: str, run_id: str) -> tuple[dict[str, Any], int | None]:
        """(the state this run starts from, the entry's revision for compare-and-set)."""
        try:
            entry = await self.kv.get(f"{naming.deployment_key(tenant, deployment)}.{symbol}")
        except nats.js.errors.KeyNotFoundError:
            return {}, None
        if not entry.value:
            return {}, entry.revision
        stored = _decoder.decode(entry.value)
        return (stored.before if stored.run == run_id else stored.state), entry.revision

    async def write(self, tenant: str, deployment: str, symbol: str, run_id: str, before: dict[str, Any],
                    after: dict[str, Any], revision: int | None) -> bool:
        """Store `after`; False when another run changed the state since `revision`."""
        value = _encoder.encode(StateEntry(state=after, run=run_id, before=before))
        if len(value) > 3 * MAX_STATE_BYTES + 1024:  # state and before, each within the limit
            return False
        key = f"{naming.deployment_key(tenant, deployment)}.{symbol}"
        try:
            if revision is None:
                await self.kv.create(key, value)
            else:
                await self.kv.update(key, value, last=revision)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def get(self, tenant: str, deployment: str, symbol: str) -> dict[str, Any]:
        state, _ = await self.read(tenant, deployment, symbol, "")
        return state

    async def current(self, tenant: str, deployment: str, symbol: str) -> dict[str, Any] | None:
        """The symbol's state after its last successful run that changed it (None: none stored)."""
        try:
            entry = await self.kv.get(f"{naming.deployment_key(tenant, deployment)}.{symbol}")
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return _decoder.decode(entry.value).state

    async def delete(self, tenant: str, deployment: str) -> None:
        keys = await streams.keys(self.kv, f"{naming.deployment_key(tenant, deployment)}.>")
        for key in keys:
            await self.kv.purge(key)
