"""Settings from the environment (node/config.py): defaults, and refusal of bad values at start."""

from __future__ import annotations

import pytest

from node.config import Settings
from node.service import Node


@pytest.mark.parametrize("name, value", [("TENANT_WARM_RUNS", "-1"), ("TENANT_WARM_WORKERS", "0"),
                                         ("TENANT_WARM_IDLE_SECONDS", "x")])
def test_bad_warm_settings_are_refused_at_start(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_the_warm_mode_is_off_by_default():
    assert Settings.from_env({}).tenant_warm_runs == 0
    assert Node(Settings.from_env({}), "nats://127.0.0.1:1").pool.warm is None


def test_prewarm_is_on_by_default_and_can_be_switched_off():
    assert Settings.from_env({}).sandbox_prewarm is True
    assert Settings.from_env({"SANDBOX_PREWARM": "0"}).sandbox_prewarm is False
    assert Node(Settings.from_env({"SANDBOX_PREWARM": "off"}), "nats://127.0.0.1:1").pool.prewarm is False


def test_a_bad_prewarm_flag_is_refused_at_start():
    with pytest.raises(ValueError, match="SANDBOX_PREWARM"):
        Settings.from_env({"SANDBOX_PREWARM": "maybe"})
