"""Named time zones inside the sandbox, through NATS, and no host path in any error about them.

The zygote reads every zone into memory before it locks itself into the empty root
(sandbox/timezones.py). Each case runs on the session's root node and on a node whose
children keep the host's file tree in view but cannot open it (chroot disabled, Landlock and
seccomp only): the case where a caught error used to show the zoneinfo directory and the
virtualenv's site-packages/tzdata.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from contracts import subjects
from node.embedded import EmbeddedServer
from tests.sandbox import pod_node
from tests.support import columnar_bars, request_json

ROOT = str(Path(__file__).resolve().parents[2])
HOST_PATH_MARKERS = sorted({sys.prefix, sys.base_prefix, os.path.realpath(sys.base_prefix), ROOT,
                            "/usr/share/zoneinfo", "/usr/lib", "site-packages", "tzdata/zoneinfo",
                            "dist-packages", "/root", "/tmp", "/etc"})

KNOWN = {
    "timestamp_tz_convert": (
        "result = str(pd.Timestamp('2024-03-10 12:00', tz='America/New_York').tz_convert('Europe/London'))",
        "2024-03-10 16:00:00+00:00"),
    "index_tz_convert": (
        "result = [str(data.index.tz_convert('Asia/Tokyo')[0]), str(data.index.tz_convert('Asia/Kolkata')[0])]",
        ["2024-01-01 09:00:00+09:00", "2024-01-01 05:30:00+05:30"]),
    "tz_localize_across_dst": (
        "s = pd.Series([1, 2], index=pd.to_datetime(['2024-03-31 00:30', '2024-03-31 03:30']))\n"
        "result = [str(t) for t in s.tz_localize('Europe/Berlin').index]",
        ["2024-03-31 00:30:00+01:00", "2024-03-31 03:30:00+02:00"]),
    "nonexistent_shift_forward": (
        "result = str(pd.Timestamp('2024-03-10 02:30').tz_localize('America/New_York', nonexistent='shift_forward'))",
        "2024-03-10 03:00:00-04:00"),
    "zoneinfo_tzinfo_in_datetime": (
        "import datetime\n"
        "tz = pd.Timestamp('2024-01-01', tz='Australia/Sydney').tzinfo\n"
        "result = [str(datetime.datetime(2024, 7, 1, tzinfo=tz).utcoffset()), str(tz)]",
        ["10:00:00", "Australia/Sydney"]),
    "many_zones": (
        "zones = ['UTC', 'Europe/Paris', 'America/Chicago', 'Asia/Singapore', 'Africa/Cairo',\n"
        "         'America/Sao_Paulo', 'Pacific/Auckland', 'Asia/Kathmandu', 'Etc/GMT+5', 'US/Eastern']\n"
        "result = [pd.Timestamp('2024-06-01 00:00', tz='UTC').tz_convert(z).strftime('%H:%M') for z in zones]",
        ["00:00", "02:00", "19:00", "08:00", "03:00", "21:00", "12:00", "05:45", "19:00", "20:00"]),
    "dateutil_name": (
        "result = str(pd.Timestamp('2024-01-01 12:00', tz='dateutil/Europe/Lisbon'))",
        "2024-01-01 12:00:00+00:00"),
}

UNKNOWN = {
    "unknown_zone": "pd.Timestamp('2024-01-01', tz='Mars/Olympus_Mons')",
    "unknown_zone_convert": "data.index.tz_convert('Atlantis/Capital')",
    "relative_path_key": "pd.Timestamp('2024-01-01', tz='../../../../proc/self/environ')",
    "absolute_path_key": "pd.Timestamp('2024-01-01', tz='/proc/self/environ')",
    "directory_key": "pd.Timestamp('2024-01-01', tz='America')",
    "dateutil_unknown": "pd.Timestamp('2024-01-01', tz='dateutil/Nowhere/Land')",
}


def _host_paths(text: str) -> list[str]:
    return [marker for marker in HOST_PATH_MARKERS if marker in text]


@pytest.fixture(scope="module")
def landlock_server():
    with EmbeddedServer(jetstream=False) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def landlock_only_nc(landlock_server, tmp_path_factory):
    """A node whose children see the host's files but cannot open them (no chroot)."""
    log = tmp_path_factory.mktemp("tz") / "node.log"
    proc = pod_node.start_root_node(landlock_server.url, "tz-no-chroot", log, extra={"SANDBOX_DISABLE": "chroot"})
    conn = await nats.connect(landlock_server.url)
    try:
        health = await pod_node.wait_healthy(conn, "tz-no-chroot", proc, log)
        layers = {layer["name"]: layer["active"] for layer in health["isolation"]}
        assert not layers["chroot"] and layers["landlock"], layers
        yield conn
    finally:
        await conn.close()
        pod_node.stop(proc)


@pytest.fixture(params=["root_node", "no_chroot_node"])
def conn(request, nc):
    return nc if request.param == "root_node" else request.getfixturevalue("landlock_only_nc")


async def _run(conn, code: str) -> dict:
    return await request_json(conn, subjects.EXECUTE, {"code": code, "bars": columnar_bars(20)}, timeout=30)


@pytest.mark.parametrize("case", list(KNOWN))
async def test_named_time_zones_work_inside_the_sandbox(conn, case):
    code, expected = KNOWN[case]
    reply = await _run(conn, code)
    assert reply["success"], reply["error"]
    assert reply["result"] == expected


@pytest.mark.parametrize("case", list(UNKNOWN))
async def test_a_caught_time_zone_error_shows_no_host_path(conn, case):
    code = "try:\n    " + UNKNOWN[case] + "\n    result = 'no error'\nexcept Exception as exc:\n" \
        "    result = type(exc).__name__ + ': ' + str(exc) + ' | ' + repr(exc.args)\n"
    reply = await _run(conn, code)
    assert reply["success"], reply["error"]
    assert _host_paths(reply["result"]) == [], reply["result"]


@pytest.mark.parametrize("case", list(UNKNOWN))
async def test_an_uncaught_time_zone_error_shows_no_host_path(conn, case):
    reply = await _run(conn, UNKNOWN[case] + "\nresult = 'no error'")
    text = repr(reply.get("error")) + repr(reply.get("result")) + repr(reply.get("logs"))
    assert _host_paths(text) == [], text
    if not reply["success"]:
        assert reply["error"]["code"] in ("RUNTIME_ERROR", "INVALID_REQUEST"), reply["error"]


async def test_an_unknown_zone_is_reported_by_its_name(conn):
    reply = await _run(conn, "pd.Timestamp('2024-01-01', tz='Mars/Olympus_Mons')")
    assert not reply["success"]
    assert "Mars/Olympus_Mons" in reply["error"]["message"], reply["error"]
