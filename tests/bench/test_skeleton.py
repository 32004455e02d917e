"""bench.skeleton end to end on tiny sizes: every responder answers and is measured.

Not a performance test: nothing here asserts how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.skeleton import SYSTEMS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_responder_of_the_skeleton_and_the_node_is_measured(tmp_path):
    out = tmp_path / "skeleton.json"
    proc = subprocess.run([sys.executable, "-m", "bench.skeleton", "--requests", "24", "--rounds", "2",
                           "--concurrency", "4", "--busy-ms", "0.2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert set(result["cpu_ms_per_request"]) == set(SYSTEMS)
    for system in SYSTEMS:
        rounds = result["rounds_cpu_ms_per_request"][system]
        assert len(rounds) == 2 and all(x > 0 for x in rounds), (system, rounds)  # ns clock: never 0
        assert f"| {system} | " in proc.stdout
    assert result["request_bytes"] > 50_000  # the trivial execute request of 1,000 JSON bars
