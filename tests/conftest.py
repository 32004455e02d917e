"""Shared fixtures: a real nats-server on a free port per test session."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from node.embedded import EmbeddedServer  # noqa: E402


@pytest.fixture(scope="session")
def nats_server():
    """One JetStream-enabled nats-server for the whole session; stopped at the end."""
    server = EmbeddedServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_url(nats_server) -> str:
    return nats_server.url
