"""The hosting CLI against live nodes: upload, deploy, replay a CSV as a live feed, follow."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from .support import arrays, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
STRATEGY = "def strategy(data):\n    print('close', float(data['close'].iloc[-1]))\n    return 'BUY' if len(data) % 2 else 'SELL'\n"


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args, "--url", url], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def _csv(path, n: int, seed: int) -> None:
    bars = arrays(n, seed=seed)
    ts = bars.column("timestamp") // 1_000_000
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(n):
        lines.append(",".join([str(int(ts[i]))] + [f"{bars.column(k)[i]:.4f}" for k in ("open", "high", "low", "close", "volume")]))
    path.write_text("\n".join(lines) + "\n")


async def test_three_commands_deploy_a_strategy_and_its_signals_and_logs_follow_live(server, nodes, tmp_path):
    url = server.url
    (tmp_path / "alt.py").write_text(STRATEGY)
    _csv(tmp_path / "bars.csv", 12, seed=21)
    put = await asyncio.to_thread(cli, url, "strategies", "put", "alt", str(tmp_path / "alt.py"))
    assert put.returncode == 0 and "alt version 1 stored (function style)" in put.stdout, put.stderr
    created = await asyncio.to_thread(cli, url, "deployments", "create", "alt-live", "--strategy", "alt",
                                      "--symbols", "CLI1", "--timeframe", "1d", "--lookback", "5",
                                      "--overlap", "allow")
    assert created.returncode == 0 and "alt-live: alt@v1 on CLI1 1d, lookback 5, overlap allow" in created.stdout, created.stderr
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    followers = [subprocess.Popen([sys.executable, "-m", "node", what, "alt-live", "--follow", "--url", url],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for what in ("signals", "logs")]
    try:
        await asyncio.sleep(1.5)  # the followers subscribe
        replay = await asyncio.to_thread(cli, url, "bars", "replay-live", str(tmp_path / "bars.csv"), "--symbol", "CLI1",
                                         "--timeframe", "1d", "--interval", "0.05")
        assert replay.returncode == 0 and "12 new" in replay.stderr, replay.stderr

        async def twelve_runs():
            ls = await asyncio.to_thread(cli, url, "deployments", "runs", "alt-live", "--limit", "100")
            return ls.stdout.count(" ok ") == 12

        await wait_for(twelve_runs, timeout=30)
        await asyncio.sleep(0.5)
    finally:
        for proc in followers:
            proc.terminate()
    signals, logs = (proc.communicate(timeout=10)[0].splitlines() for proc in followers)
    assert len(signals) == 12 and all(" CLI1 " in line for line in signals)
    assert [line.split()[2] for line in signals] == ["BUY" if min(i + 1, 5) % 2 else "SELL" for i in range(12)]
    closes = arrays(12, seed=21).column("close")
    assert [float(line.rsplit(" ", 1)[1]) for line in logs] == pytest.approx(np.round(closes, 4).tolist())
    ls = await asyncio.to_thread(cli, url, "deployments", "ls")
    row = next(line for line in ls.stdout.splitlines() if line.startswith("alt-live"))
    assert "alt@v1" in row and "running" in row and " 12 " in row


async def test_a_bad_deployment_is_a_coded_error_not_a_traceback(server, nodes):
    out = await asyncio.to_thread(cli, server.url, "deployments", "create", "bad", "--strategy", "nope",
                                  "--symbols", "X", "--timeframe", "1d")
    assert out.returncode == 1 and out.stderr.startswith("error: INVALID_REQUEST: strategy 'nope' not found")
