"""Issue 18's targets as ratios: how each is computed from a run's JSON, and judged.

Synthetic runs (numbers chosen so each rule's outcome is known); the real run's JSON shape is
checked by test_harness.py on the tiny profile.
"""

from __future__ import annotations

import copy

import pytest

from bench.ratios import RATIO_TARGETS, comparison, evaluate_ratios, system_cpu_ms
from bench.report import render


def _case(p50: float, peak: float, cpu: dict, fresh_share: float | None = None) -> dict:
    """c=1 and c=64 levels; `fresh_share`: children started per request (a warm case's fallbacks)."""
    return {"status": "ok", "peak_throughput_rps": peak,
            "levels": {"1": {"p50_ms": p50, "throughput_rps": round(1000 / p50, 1), "cpu_ms_per_request": {},
                             "children_started_per_request": fresh_share},
                       "64": {"p50_ms": p50 * 40, "throughput_rps": peak, "cpu_ms_per_request": cpu,
                              "children_started_per_request": fresh_share}}}


def _openloop(**p50_at_20: float) -> dict:
    return {"arrivals": "poisson", "systems": {
        name: {"rows": {"20": {"p50_ms": v}}} for name, v in p50_at_20.items()}}


@pytest.fixture
def run() -> dict:
    node = {"node": 0.25, "zygote": 1.0, "sandbox_children": 7.0}
    warm = {"node": 0.25, "zygote": 0.0, "sandbox_children": 0.8}
    return {
        "profile": "quick", "sizes": {"bars": 1_000},
        "forkfloor": {"status": "ok", "fork_exit": {"cpu_ms_per_fork": 4.0}},
        "cases": {
            "trivial": _case(4.0, 180.0, node),
            "sma": _case(6.0, 150.0, dict(node, sandbox_children=11.0)),  # 12 ms: 3x the floor
            "warm_trivial": _case(1.0, 1400.0, warm, fresh_share=0.0),
            "warm_sma": _case(1.5, 700.0, dict(warm, node=0.5), fresh_share=0.0),
            "inprocess_trivial": _case(1.0, 700.0, {"inprocess": 1.0}),
            "inprocess_sma": _case(1.25, 450.0, {"inprocess": 1.6}),
            "inprocess2_trivial": _case(1.0, 1300.0, {"inprocess": 1.1}),
            "inprocess2_sma": _case(1.3, 800.0, {"inprocess": 1.7}),
        },
        "comparisons": {
            "warm_trivial~inprocess_trivial": {"case": "warm_trivial", "reference": "inprocess_trivial",
                                               "pairs": 300, "p50_ms": 1.05, "reference_p50_ms": 1.0,
                                               "p50_ratio": 1.05, "median_pair_diff_ms": 0.05},
        },
        "openloop": _openloop(trivial=3.0, inprocess_trivial=1.6, sma=6.0, inprocess_sma=2.0),
    }


def _rows(result: dict) -> dict[str, dict]:
    return {r["id"]: r for r in evaluate_ratios(result)}


def test_every_target_is_evaluated_in_order(run):
    assert [r["id"] for r in evaluate_ratios(run)] == [t[0] for t in RATIO_TARGETS]


def test_fresh_cpu_is_zygote_plus_children_over_the_fork_floor(run):
    rows = _rows(run)
    assert rows["fresh_cpu_vs_floor_trivial"]["measured"] == 8.0
    assert rows["fresh_cpu_vs_floor_trivial"]["ratio"] == 2.0 and rows["fresh_cpu_vs_floor_trivial"]["met"] is True
    assert rows["fresh_cpu_vs_floor_sma"]["ratio"] == 3.0 and rows["fresh_cpu_vs_floor_sma"]["met"] is False


def test_fresh_latency_at_20_per_second_is_compared_with_the_baseline_at_the_same_rate(run):
    rows = _rows(run)
    assert rows["fresh_p50_20rps_trivial"]["ratio"] == 1.875 and rows["fresh_p50_20rps_trivial"]["met"] is True
    assert rows["fresh_p50_20rps_sma"]["ratio"] == 3.0 and rows["fresh_p50_20rps_sma"]["met"] is False


def test_warm_node_cpu_is_the_node_process_alone(run):
    rows = _rows(run)
    assert rows["warm_node_cpu_trivial"]["measured"] == 0.25 and rows["warm_node_cpu_trivial"]["met"] is True
    assert rows["warm_node_cpu_sma"]["measured"] == 0.5 and rows["warm_node_cpu_sma"]["met"] is False


def test_warm_throughput_is_compared_with_two_baseline_processes(run):
    rows = _rows(run)
    assert rows["warm_rps_vs_inprocess2_trivial"]["reference"] == 1300.0
    assert rows["warm_rps_vs_inprocess2_trivial"]["met"] is True  # 1400 / 1300
    assert rows["warm_rps_vs_inprocess2_sma"]["ratio"] == 0.875 and rows["warm_rps_vs_inprocess2_sma"]["met"] is False


def test_warm_c1_latency_prefers_the_interleaved_measurement(run):
    rows = _rows(run)
    trivial = rows["warm_p50_vs_inprocess_trivial"]
    assert trivial["ratio"] == 1.05 and trivial["met"] is True and "interleaved" in trivial["how"]
    sma = rows["warm_p50_vs_inprocess_sma"]  # no interleaved pair: the two c=1 phases
    assert sma["ratio"] == 1.2 and sma["met"] is False and "separate phases" in sma["how"]


def _saturation(case: str, reference: str, rps: float, reference_rps: float, node_cpu: float,
                fresh_share: float | None = 0.0) -> dict:
    return {f"{case}~{reference}": {
        "case": case, "reference": reference, "rounds": 6, "requests_per_burst": 300, "concurrency": 16,
        "reference_concurrency": 64, "ok": 1800, "reference_ok": 1800, "rps": rps, "reference_rps": reference_rps,
        "rps_ratio": round(rps / reference_rps, 3), "round_ratios": [], "round_ratio_median": 0.9,
        "cpu_ms_per_request": {"node": node_cpu, "sandbox_children": 1.0},
        "reference_cpu_ms_per_request": {"inprocess": 1.2}, "children_started_per_request": fresh_share,
        "errors": {}}}


def test_warm_throughput_prefers_the_interleaved_saturation_bursts(run):
    run["saturation"] = _saturation("warm_trivial", "inprocess2_trivial", 900.0, 1000.0, 0.35)
    row = _rows(run)["warm_rps_vs_inprocess2_trivial"]
    assert (row["measured"], row["reference"], row["ratio"], row["met"]) == (900.0, 1000.0, 0.9, False)
    assert "interleaved at saturation" in row["how"] and "1400.0 / 1300.0" in row["how"]  # the phases, beside
    assert _rows(run)["warm_rps_vs_inprocess2_sma"]["ratio"] == 0.875  # no bursts for SMA: the phases
    assert comparison(run)[2]["rps_ratio_vs_2proc"] == 0.9 and comparison(run)[2]["rps_vs_2proc_interleaved"]


def test_warm_node_cpu_prefers_the_scheduler_clock_of_the_saturation_bursts(run):
    run["saturation"] = _saturation("warm_trivial", "inprocess2_trivial", 900.0, 1000.0, 0.35)
    row = _rows(run)["warm_node_cpu_trivial"]
    assert row["measured"] == 0.35 and row["met"] is False and "ticks: 0.25" in row["how"]


def test_saturation_bursts_that_fell_back_to_fresh_children_are_not_used(run):
    run["saturation"] = _saturation("warm_trivial", "inprocess2_trivial", 900.0, 1000.0, 0.35, fresh_share=0.2)
    rows = _rows(run)
    assert rows["warm_rps_vs_inprocess2_trivial"]["ratio"] == round(1400 / 1300, 3)
    assert rows["warm_node_cpu_trivial"]["measured"] == 0.25


def test_the_printed_report_shows_the_saturation_bursts(run):
    run["saturation"] = _saturation("warm_trivial", "inprocess2_trivial", 900.0, 1000.0, 0.35)
    result = copy.deepcopy(run)
    result.update(machine={}, targets=[], ratios=evaluate_ratios(run), comparison=comparison(run),
                  cases={}, openloop=None, forkfloor=None)
    text = render(result)
    assert "| interleaved at saturation |" in text
    assert "| warm_trivial vs inprocess2_trivial | 6 x 300 | 16 / 64 | 900.0 | 1000.0 | 0.90 |" in text


def test_a_target_whose_figures_are_missing_is_not_judged(run):
    del run["forkfloor"]
    del run["cases"]["inprocess2_sma"]
    rows = _rows(run)
    for tid in ("fresh_cpu_vs_floor_trivial", "warm_rps_vs_inprocess2_sma"):
        assert rows[tid]["met"] is None and rows[tid]["note"] == "not measured in this run"


def test_targets_are_not_judged_on_other_bar_counts(run):
    run["sizes"]["bars"] = 200
    run["profile"] = "tiny"
    for row in evaluate_ratios(run):
        assert row["met"] is None and row["note"] == "not comparable: tiny sizes"


def test_system_cpu_is_what_serves_the_request(run):
    assert system_cpu_ms(run, "trivial") == 8.25  # node + zygote + children
    assert system_cpu_ms(run, "inprocess_trivial") == 1.0  # the responder process(es)
    rows = {(r["case"]): r for r in comparison(run)}
    assert rows["trivial"]["cpu_ratio"] == 8.25
    assert rows["trivial"]["cpu_ms"] == 8.25 and rows["trivial"]["baseline_cpu_ms"] == 1.0
    assert rows["warm_trivial"]["rps_ratio_vs_1proc"] == 2.0
    assert rows["warm_trivial"]["p50_c1_paired"] is True and rows["sma"]["p50_c1_paired"] is False


def test_the_printed_report_shows_met_and_not_met(run):
    result = copy.deepcopy(run)
    result.update(machine={}, targets=[], ratios=evaluate_ratios(run), comparison=comparison(run),
                  cases={}, openloop=None, forkfloor=None)  # the ratio tables only (no full stats here)
    text = render(result)
    assert "| target (issue 18) |" in text and "| yes |" in text and "| **no** |" in text
    assert "| vs the in-process baseline (INSECURE) |" in text


def test_warm_targets_are_read_where_the_runs_stayed_warm(run):
    # at 64 in flight 40 % of the runs fell back to fresh children: c=16 is the warm figure
    warm = run["cases"]["warm_trivial"]
    warm["levels"]["64"]["children_started_per_request"] = 0.4
    warm["levels"]["16"] = {"p50_ms": 12.0, "throughput_rps": 1350.0, "children_started_per_request": 0.01,
                            "cpu_ms_per_request": {"node": 0.2, "zygote": 0.0, "sandbox_children": 0.7}}
    rows = _rows(run)
    assert rows["warm_rps_vs_inprocess2_trivial"]["measured"] == 1350.0
    assert rows["warm_node_cpu_trivial"]["measured"] == 0.2 and "c=16" in rows["warm_node_cpu_trivial"]["how"]


def test_warm_targets_say_when_every_level_fell_back_to_fresh_children(run):
    for level in run["cases"]["warm_sma"]["levels"].values():
        level["children_started_per_request"] = 0.5
    rows = _rows(run)
    assert "50% of its requests took a fresh child" in rows["warm_node_cpu_sma"]["how"]
    assert rows["warm_rps_vs_inprocess2_sma"]["measured"] == 700.0  # the busiest level, said so


def test_an_open_loop_rate_a_system_could_not_keep_up_with_is_flagged(run):
    run["openloop"]["systems"]["trivial"]["rows"]["20"].update(offered_rps=20.0, achieved_rps=13.5)
    row = _rows(run)["fresh_p50_20rps_trivial"]
    assert "trivial did not keep up (replies at 13.5/s)" in row["how"]
    assert row["met"] is True  # still judged: the ratio is what it is
