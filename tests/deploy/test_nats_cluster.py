"""deploy/nats/cluster/: the three member configs form a JetStream cluster that accepts R3 streams.

`nats-server -t` (test_manifests.py) only parses a config; this starts all three members on
loopback and creates a replicated stream through them as the `node` user. Only what cannot
work on one host is changed: ports and route addresses come from command-line flags (which
override the file), and each member gets its own copy of deploy/nats with store_dir pointed
at a temporary directory (the file's /data/jetstream is the volume path in production).
"""

from __future__ import annotations

import asyncio
import re
import shutil

import nats
from nats.js.api import RetentionPolicy, StreamConfig

from node.embedded import EmbeddedServer, free_port

from .support import DEPLOY, PASSWORDS, password_env


async def test_three_member_configs_form_a_jetstream_cluster(tmp_path):
    route_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
    servers: list[EmbeddedServer] = []
    try:
        with password_env():
            for n in (1, 2, 3):
                tree = tmp_path / f"member-{n}"
                shutil.copytree(DEPLOY / "nats", tree)
                common = tree / "cluster" / "common.conf"
                text, count = re.subn(
                    r'store_dir: "[^"]*"', f'store_dir: "{tree / "jetstream"}"', common.read_text()
                )
                assert count == 1
                common.write_text(text)
                servers.append(
                    EmbeddedServer(
                        config_file=str(tree / "cluster" / f"nats-{n}.conf"),
                        jetstream=False,  # the config file enables it
                        extra_args=["-m", str(free_port()),
                                    "--cluster", f"nats://127.0.0.1:{route_ports[n - 1]}",
                                    "--routes", routes],
                    ).start()
                )

        nc = await nats.connect(servers[0].url, user="node", password=PASSWORDS["node"],
                                allow_reconnect=False)
        try:
            js = nc.jetstream(timeout=1)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while True:  # until the members have elected a JetStream meta leader
                try:
                    info = await js.add_stream(StreamConfig(
                        name="STRATEGY_JOBS", subjects=["strategy.jobs.>"],
                        retention=RetentionPolicy.WORK_QUEUE, num_replicas=3,
                    ))
                    break
                except (nats.errors.TimeoutError, nats.js.errors.APIError):
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            assert info.cluster.name == "strategy-nats"
            members = {info.cluster.leader} | {p.name for p in info.cluster.replicas or []}
            assert members == {"nats-1", "nats-2", "nats-3"}
        finally:
            await nc.close()
    finally:
        for server in servers:
            server.close()
