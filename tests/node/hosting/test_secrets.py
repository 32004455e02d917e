"""Environment and encrypted secrets of deployments, through a real nats-server and two nodes.

The leak suite: a strategy that holds a secret tries to get it out by printing it, reversing it,
base64-encoding it, splitting it across log lines, putting it in a signal's reason, in `state`
(as a value and as a key), and raising it. Afterwards every message of every stream on the
server (Key-Value buckets included) is read raw: the clear value is in none of them.
"""

from __future__ import annotations

import base64
import os

import msgspec
import nats
import pytest
import pytest_asyncio

from backtest.store import BarStore
from contracts import ErrorCode, encode, subjects
from contracts.secrets import SecretReply
from node.config import Settings
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient, HostingError
from node.hosting.secrets import Keyring

from .support import arrays, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

OLD_KEY = base64.b64encode(os.urandom(32)).decode()
NEW_KEY = base64.b64encode(os.urandom(32)).decode()
KEYS = f"old:{OLD_KEY},new:{NEW_KEY}"
SECRET = "sk-live-7Hq2ZpW9xR4mT1vB"  # what the strategies try to leak
OTHER = "another-Secret-Value-42"

B64 = """
def b64(s):
    table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    raw = [ord(c) for c in s]
    out = ""
    for i in range(0, len(raw), 3):
        chunk = raw[i:i + 3]
        n = sum(b << (16 - 8 * j) for j, b in enumerate(chunk))
        for j in range(len(chunk) + 1):
            out += table[(n >> (18 - 6 * j)) & 63]
    return out + "=" * ((3 - len(raw) % 3) % 3)
"""

LEAKER = B64 + """
def strategy(data):
    s = secrets["API_KEY"]
    print(s)
    print("reversed", s[::-1])
    print(b64(s))
    log(s[:8])
    log(s[8:16])
    log(s[16:])
    state["leak"] = s
    state[s] = 1
    signal("BUY", reason="key=" + s)
    print("len", len(s), "names", sorted(secrets), "mode", env["MODE"])
"""

RAISER = """
def strategy(data):
    raise ValueError("the key is " + secrets["API_KEY"])
"""

ENV_READER = """
def strategy(data):
    print("mode", env["MODE"], "limit", env["LIMIT"], "names", sorted(secrets))
"""

ENV_WRITER = """
def strategy(data):
    env["MODE"] = "changed"
"""

SECRETS_WRITER = """
def strategy(data):
    secrets["API_KEY"] = "changed"
"""


@pytest.fixture(scope="module")
def server():
    srv = EmbeddedServer().start()
    yield srv
    srv.close()


NODE_NAMES = ("sec-a", "sec-b")  # conftest's `nodes`, with the key
NODE_ENV = {"SECRETS_KEY": KEYS, "DRAIN_TIMEOUT_SECONDS": "1"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nc(server, nodes):
    conn = await nats.connect(server.url)
    await BarStore(conn.jetstream(), conn).load("SEC", "1d", arrays(40, seed=5))
    yield conn
    await conn.drain()


async def _deploy_and_run(hosting: HostingClient, dep: str, code: str, **fields) -> list:
    await hosting.put_strategy(dep, code)
    await hosting.create_deployment(dep, strategy=dep, symbols=["SEC"], timeframe="1d", lookback=20,
                                    desired="paused", **fields)
    await hosting.run_now(dep)

    async def recorded():
        return (await hosting.runs(dep)).runs

    return await wait_for(recorded, timeout=30)


async def _logs(js, dep: str) -> list[str]:
    sub = await js.subscribe(f"{subjects.LOGS}.local.{dep}", ordered_consumer=True)
    lines = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:  # noqa: BLE001 - nothing more
                break
            lines += msgspec.json.decode(msg.data)["lines"]
    finally:
        await sub.unsubscribe()
    return lines


async def _everything_stored(js) -> bytes:
    """Every message of every stream on the server (KV buckets are streams), raw, headers included."""
    out = []
    for info in await js.streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(info.config.name, seq)
            except Exception:  # noqa: BLE001 - deleted or purged
                continue
            out.append(msg.subject.encode())
            out.append(repr(msg.headers).encode())
            out.append(msg.data or b"")
    return b"\n".join(out)


def _clear_forms(value: str) -> list[bytes]:
    return [value.encode(), value[::-1].encode(), base64.b64encode(value.encode())]


async def test_env_and_secrets_reach_the_strategy_as_read_only_mappings(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.set_secret("API_KEY", SECRET)
    await hosting.set_secret("UNNAMED", OTHER)
    runs = await _deploy_and_run(hosting, "env-reader", ENV_READER, env={"MODE": "paper", "LIMIT": "5"},
                                 secrets=["API_KEY"])
    assert runs[0].status == "ok", runs[0].error
    lines = await _logs(nc.jetstream(), "env-reader")
    # only the named secret is handed in
    assert lines == ["mode paper limit 5 names ['API_KEY']"]


@pytest.mark.parametrize("dep, code", [("env-writer", ENV_WRITER), ("secrets-writer", SECRETS_WRITER)])
async def test_writing_env_or_secrets_fails_the_run(nc, nodes, dep, code):
    hosting = HostingClient(nc)
    await hosting.set_secret("API_KEY", SECRET)
    runs = await _deploy_and_run(hosting, dep, code, env={"MODE": "paper"}, secrets=["API_KEY"])
    assert runs[0].status == "error" and runs[0].error.code == ErrorCode.SECURITY_VIOLATION
    assert "mappingproxy" in runs[0].error.message


async def test_secrets_ls_shows_names_and_key_ids_only(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.set_secret("LISTED", OTHER)
    msg = await nc.request(f"{subjects.SECRETS}.list", b"{}", timeout=10)
    assert OTHER.encode() not in msg.data and SECRET.encode() not in msg.data
    reply = msgspec.json.decode(msg.data, type=SecretReply)
    listed = {s.name: s for s in reply.secrets}
    assert "LISTED" in listed and listed["LISTED"].key_id == "new"
    assert set(msgspec.to_builtins(listed["LISTED"])) == {"name", "key_id", "updated_at"}


async def test_the_leak_suite_finds_no_clear_secret_anywhere_a_client_can_read(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.set_secret("API_KEY", SECRET)
    runs = await _deploy_and_run(hosting, "leaker", LEAKER, env={"MODE": "live"}, secrets=["API_KEY"])
    assert runs[0].status == "ok", runs[0].error
    js = nc.jetstream()
    lines = await _logs(js, "leaker")
    # the run did hold the secret (its length and name came out), and each attempt was blanked
    assert lines[-1] == f"len {len(SECRET)} names ['API_KEY'] mode live"
    assert lines[:6] == ["[REDACTED]", "reversed [REDACTED]", "[REDACTED]", "[REDACTED]", "[REDACTED]",
                         "[REDACTED]"]
    assert runs[0].signal is not None and runs[0].signal.reason == "key=[REDACTED]"
    # state, replies, records, logs, signals, status: the whole server holds no clear form
    get = await nc.request(f"{subjects.DEPLOYMENTS}.runs", encode({"id": "leaker"}), timeout=10)
    everything = await _everything_stored(js) + get.data
    for form in _clear_forms(SECRET):
        assert form not in everything
    assert b"[REDACTED]" in everything


async def test_a_secret_raised_in_an_error_is_redacted_from_the_record(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.set_secret("API_KEY", SECRET)
    runs = await _deploy_and_run(hosting, "raiser", RAISER, secrets=["API_KEY"])
    assert runs[0].status == "error" and runs[0].error.code == ErrorCode.RUNTIME_ERROR
    assert "the key is [REDACTED]" in runs[0].error.message
    status = (await hosting.get_deployment("raiser")).status
    assert "[REDACTED]" in status.last_error.message
    everything = await _everything_stored(nc.jetstream())
    for form in _clear_forms(SECRET):
        assert form not in everything


async def test_nats_holds_only_envelopes_in_the_secrets_bucket(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.set_secret("RAW_CHECK", OTHER)
    js = nc.jetstream()
    msg = await js.get_last_msg("KV_SECRETS", "$KV.SECRETS.local.RAW_CHECK")
    envelope = msgspec.json.decode(msg.data)
    assert set(envelope) == {"v", "kid", "nonce", "ct", "at"} and envelope["kid"] == "new"
    for form in _clear_forms(OTHER):
        assert form not in msg.data
    # the node's key opens it, bound to this tenant and name only
    ring = Keyring.parse(KEYS)
    assert ring.open("local.RAW_CHECK", msg.data) == OTHER
    with pytest.raises(Exception):
        ring.open("other.RAW_CHECK", msg.data)


async def test_rotate_reencrypts_envelopes_of_an_older_key_under_the_newest(nc, nodes):
    hosting = HostingClient(nc)
    js = nc.jetstream()
    kv = await js.key_value("SECRETS")
    await kv.put("local.OLD_ONE", Keyring.parse(f"old:{OLD_KEY}").seal("local.OLD_ONE", OTHER))
    before = {s.name: s.key_id for s in (await hosting.list_secrets()).secrets}
    assert before["OLD_ONE"] == "old"
    assert (await hosting.rotate_secrets()).rotated >= 1
    after = {s.name: s.key_id for s in (await hosting.list_secrets()).secrets}
    assert set(after.values()) == {"new"}
    assert Keyring.parse(KEYS).open("local.OLD_ONE", (await kv.get("local.OLD_ONE")).value) == OTHER
    assert (await hosting.rotate_secrets()).rotated == 0


async def test_a_deployment_naming_an_unset_secret_is_refused_naming_it(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("plain", ENV_READER)
    with pytest.raises(HostingError) as err:
        await hosting.create_deployment("no-secret", strategy="plain", symbols=["SEC"], timeframe="1d",
                                        secrets=["NEVER_SET"])
    assert err.value.error.code == ErrorCode.INVALID_REQUEST and "NEVER_SET" in err.value.error.message
    assert "$.secrets" in err.value.error.message


async def test_warm_runs_and_secrets_together_are_refused_naming_both(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.set_secret("API_KEY", SECRET)
    await hosting.put_strategy("warmish", ENV_READER)
    with pytest.raises(HostingError) as err:
        await hosting.create_deployment("warmish", strategy="warmish", symbols=["SEC"], timeframe="1d",
                                        secrets=["API_KEY"], warm=True)
    assert err.value.error.code == ErrorCode.INVALID_REQUEST
    assert "$.warm" in err.value.error.message and "$.secrets" in err.value.error.message


async def test_a_secret_named_by_a_deployment_cannot_be_deleted(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.set_secret("IN_USE", OTHER)
    await hosting.put_strategy("user", ENV_READER)
    await hosting.create_deployment("uses-it", strategy="user", symbols=["SEC"], timeframe="1d",
                                    secrets=["IN_USE"], desired="paused")
    with pytest.raises(HostingError) as err:
        await hosting.delete_secret("IN_USE")
    assert err.value.error.code == ErrorCode.INVALID_REQUEST and "uses-it" in err.value.error.message
    await hosting.delete_deployment("uses-it")
    await hosting.delete_secret("IN_USE")
    assert "IN_USE" not in {s.name for s in (await hosting.list_secrets()).secrets}


@pytest.mark.parametrize("op, body, field", [
    ("put", {"name": "A", "value": "v", "extra": 1}, "extra"),
    ("list", {"name": "A"}, "name"),
    ("rotate", {"name": "A"}, "name"),
    ("put", {"name": "not a name", "value": "v"}, "name"),
    ("put", {"name": "A", "value": ""}, "value"),
    ("delete", {}, "name"),
])
async def test_bad_secret_requests_are_invalid_request_naming_the_field(nc, nodes, op, body, field):
    msg = await nc.request(f"{subjects.SECRETS}.{op}", encode(body), timeout=10)
    reply = msgspec.json.decode(msg.data, type=SecretReply)
    assert not reply.ok and reply.error.code == ErrorCode.INVALID_REQUEST
    assert field in reply.error.message


async def test_env_values_are_validated_by_name_and_size(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("envcheck", ENV_READER)
    for env, field in (({"1BAD": "x"}, "env"), ({"OK": "x" * 5000}, "env")):
        msg = await nc.request(f"{subjects.DEPLOYMENTS}.create", encode(
            {"id": "envcheck", "strategy": "envcheck", "symbols": ["SEC"], "timeframe": "1d", "env": env}), timeout=10)
        reply = msgspec.json.decode(msg.data)
        assert not reply["ok"] and reply["error"]["code"] == "INVALID_REQUEST" and field in reply["error"]["message"]


async def test_a_key_that_is_not_32_bytes_of_base64_stops_the_node_at_start():
    with pytest.raises(ValueError, match="32"):
        Keyring.parse(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        Keyring.parse("k1:not*base64")
    ring = Keyring.parse(KEYS)
    assert ring.newest == "new" and OLD_KEY not in repr(ring) and NEW_KEY not in repr(ring)
    settings = Settings.from_env({"SECRETS_KEY": KEYS, "DRAIN_TIMEOUT_SECONDS": "1"})
    assert NEW_KEY not in repr(settings)
