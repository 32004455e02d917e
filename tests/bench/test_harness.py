"""The benchmark harness end to end on tiny sizes: every case, every statistic, finite numbers.

Not a performance test: nothing here asserts how fast anything is.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from bench.cases import CASE_NAMES
from bench.profiles import TINY
from bench.report import TARGETS, evaluate_targets, render
from bench.stats import COUNT_FIELDS, STAT_FIELDS, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKTEST_ENDPOINT = importlib.util.find_spec("node.backtesting") is not None
SANDBOXED = ("trivial", "sma", "backtest", "sweep")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| case | in flight |" in proc.stdout  # the printed table
    with open(out) as fh:
        return json.load(fh)


def test_every_case_is_reported(tiny_run):
    assert set(CASE_NAMES) <= set(tiny_run["cases"])
    for name in CASE_NAMES:
        status = tiny_run["cases"][name]["status"]
        if name in ("backtest", "sweep") and not BACKTEST_ENDPOINT:
            assert status == "ok" or status.startswith("unavailable: "), status
        else:
            assert status == "ok", f"{name}: {status}\n{tiny_run['setup'].get('node_log_tail', '')}"


def test_every_statistic_is_a_finite_number(tiny_run):
    for name, entry in tiny_run["cases"].items():
        if entry["status"] != "ok":
            continue
        assert sorted(entry["levels"]) == sorted(str(c) for c in TINY.concurrency), name
        for level, stats in entry["levels"].items():
            for field in STAT_FIELDS:
                assert _finite(stats[field]) and stats[field] > 0, (name, level, field, stats[field])
            for field in COUNT_FIELDS:
                assert isinstance(stats[field], int), (name, level, field)
            assert stats["errors"] == 0, (name, level, stats["error_codes"])
            assert stats["ok"] >= int(level)
            assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
            cpu = stats["cpu_ms_per_request"]
            assert _finite(cpu["total"]) and cpu["total"] >= 0
            if name != "echo":  # the node's own time, from the replies
                assert _finite(stats["node_p50_ms"]) and stats["node_p50_ms"] >= 0, (name, level)
        assert _finite(entry["p50_ratio_vs_echo"]) and entry["p50_ratio_vs_echo"] > 0, name
        assert _finite(entry["peak_throughput_rps"]), name


def test_raw_echo_baseline_present(tiny_run):
    echo = tiny_run["cases"]["echo"]
    assert echo["status"] == "ok"
    assert echo["p50_ratio_vs_echo"] == 1.0
    assert echo["request_bytes"] == tiny_run["cases"]["trivial"]["request_bytes"]  # the same payload
    assert tiny_run["setup"]["reply_bytes_trivial"] > 0
    for name in ("trivial", "sma"):
        paired = tiny_run["cases"][name]["paired"]
        assert paired["reference"] == "echo" and _finite(paired["p50_ratio"]) and paired["pairs"] > 0


def test_first_run_and_memory_figures(tiny_run):
    cases = tiny_run["cases"]
    for name, cached in (("first_run_trivial", "trivial"), ("first_run_sma", "sma"), ("validate_new", "validate")):
        assert cases[name]["cached_case"] == cached
        assert _finite(cases[name]["p50_minus_cached_ms"])
    for name in SANDBOXED:
        if cases[name]["status"] != "ok":
            continue
        memory = cases[name]["memory"]
        assert memory["children_sampled"] >= 1, (name, memory)
        for field in ("private_mb_p50", "private_mb_max", "rss_mb_p50"):
            assert _finite(memory[field]) and memory[field] > 0, (name, field, memory)


def test_machine_and_targets_recorded(tiny_run):
    machine = tiny_run["machine"]
    assert machine["nproc"] >= 1 and machine["python"] and machine["mem_total_mb"] > 0
    assert [t["id"] for t in tiny_run["targets"]] == [t[0] for t in TARGETS]
    json.dumps(tiny_run, allow_nan=False)  # strict JSON: no NaN or infinity anywhere


def test_summarize_and_report_on_synthetic_numbers():
    stats = summarize([1_000_000, 2_000_000, 3_000_000, 4_000_000], wall_s=0.5, concurrency=4,
                      errors=Counter({"TIMEOUT": 1}))
    assert stats["p50_ms"] == 2.5 and stats["max_ms"] == 4.0 and stats["mean_ms"] == 2.5
    assert stats["throughput_rps"] == 8.0 and stats["requests"] == 5 and stats["errors"] == 1
    empty = summarize([], wall_s=1.0, concurrency=1, errors=Counter({"NO_RESPONDERS": 2}))
    assert all(empty[f] is None for f in STAT_FIELDS) and empty["ok"] == 0
    result = {"profile": "full", "sizes": {"bars": 1000, "backtest_bars": 1_000_000, "sweep_bars": 100_000,
                                            "sweep_pairs": 100, "concurrency": [1]},
              "machine": {}, "cases": {
                  "trivial": {"status": "ok", "levels": {"1": dict(stats, p50_ms=0.4, p99_ms=1.0)},
                              "p50_ratio_vs_echo": 2.0, "peak_throughput_rps": 500.0,
                              "memory": {"private_mb_p50": 4.0}},
                  "backtest": {"status": "unavailable: NO_RESPONDERS x1", "levels": {}}}}
    targets = {t["id"]: t for t in evaluate_targets(result)}
    assert targets["trivial_p50"]["pass"] is True and targets["trivial_rps"]["pass"] is True
    assert targets["backtest_1m"]["pass"] is None and "unavailable" in targets["backtest_1m"]["note"]
    result["targets"] = list(targets.values())
    assert "unavailable" in render(result)
