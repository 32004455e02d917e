"""The prewarm job a ready child runs before its real one (sandbox/zygote.py, sandbox/serve.py):
what it exercises, and that a child whose job is already waiting skips it."""

from __future__ import annotations

import os
import select
import socket

from sandbox import runtime, serve, zygote
from sandbox.lockdown import _vm_bytes
from sandbox.protocol import HEADER, frame, job_encoder, outcome_decoder
from tests.sandbox.test_warm import job


def test_the_prewarm_job_runs_a_crossover_with_an_indicator_and_per_bar_signals():
    outcome = runtime.run(zygote._warm_up())
    assert outcome.success, outcome.error
    assert list(outcome.indicators) == ["rsi"]
    assert len(outcome.signals) > 1  # a per-bar Series return, not one signal for the last bar


def test_job_waiting_is_false_until_the_node_has_written_the_job():
    node, child = socket.socketpair()
    with node, child:
        assert not serve.job_waiting(child.fileno())
        node.sendall(b"x")
        assert serve.job_waiting(child.fileno())


def _serve_in_child(job_first: bool) -> tuple[list[str], bool]:
    """Fork a child that serves one job with a prewarm; returns what it ran and whether it answered."""
    node, child = socket.socketpair()
    marks_r, marks_w = os.pipe()
    prewarm = job("def strategy(data):\n    return 'SELL'\n")
    real = job("def strategy(data):\n    return 'BUY'\n")
    if job_first:
        node.sendall(frame(job_encoder.encode(real)))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's side
        code = 0
        try:
            inner = serve.run

            def recording(ran):
                os.write(marks_w, b"P" if ran is prewarm else b"J")
                return inner(ran)

            serve.run = recording
            serve.serve(child.fileno(), _vm_bytes(), prewarm)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(marks_w)
    child.close()
    early = b""
    if not job_first:  # the job goes out once the child is busy with its prewarm (or has skipped it)
        if select.select([marks_r], [], [], 30)[0]:
            early = os.read(marks_r, 1)
        node.sendall(frame(job_encoder.encode(real)))
    reply = b""
    while chunk := node.recv(1 << 16):
        reply += chunk
    node.close()
    _, status = os.waitpid(pid, 0)
    marks = (early + os.read(marks_r, 16)).decode()
    os.close(marks_r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    outcome = outcome_decoder.decode(reply[HEADER.size:])
    return list(marks), bool(outcome.success and outcome.signals[-1].type == "BUY")


def test_a_child_whose_job_is_already_waiting_skips_the_prewarm():
    ran, answered = _serve_in_child(job_first=True)
    assert ran == ["J"] and answered


def test_an_idle_child_runs_the_prewarm_before_its_job():
    ran, answered = _serve_in_child(job_first=False)
    assert ran == ["P", "J"] and answered

