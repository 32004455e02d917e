"""Health and the NATS micro discovery subjects ($SRV.PING/INFO/STATS)."""

import json

from contracts import subjects
from tests.support import columnar_bars, request_json


async def test_health_reports_status_limits_and_every_isolation_layer(nc):
    reply = await request_json(nc, subjects.HEALTH, {})
    assert reply["status"] == "ok"
    assert reply["nats_connected"] is True
    assert reply["limits"]["max_timeout_seconds"] == 10
    names = {layer["name"] for layer in reply["isolation"]}
    assert {"fresh_process", "network_namespace", "seccomp", "chroot", "landlock", "uid_drop",
            "no_new_privs", "rlimits", "empty_environment", "closed_fds", "restricted_python"} <= names
    assert all(isinstance(layer["active"], bool) and layer["detail"] for layer in reply["isolation"])
    assert reply["pool"]["healthy"] is True


async def test_srv_ping_answers(nc):
    msg = await nc.request("$SRV.PING", b"", timeout=5)
    assert json.loads(msg.data)["name"] == subjects.SERVICE_NAME


async def test_srv_info_lists_the_endpoints_in_the_queue_group(nc):
    msg = await nc.request(f"$SRV.INFO.{subjects.SERVICE_NAME}", b"", timeout=5)
    info = json.loads(msg.data)
    by_subject = {e["subject"]: e for e in info["endpoints"]}
    assert {subjects.EXECUTE, subjects.VALIDATE, subjects.HEALTH} <= set(by_subject)
    assert all(by_subject[s]["queue_group"] == subjects.QUEUE_GROUP
               for s in (subjects.EXECUTE, subjects.VALIDATE, subjects.HEALTH))


async def test_srv_stats_counts_requests_and_errors_by_code(nc):
    await request_json(nc, subjects.EXECUTE, {"code": "def strategy(d): return 'BUY'", "bars": columnar_bars(5)})
    await request_json(nc, subjects.EXECUTE, {"code": 1})
    msg = await nc.request(f"$SRV.STATS.{subjects.SERVICE_NAME}", b"", timeout=5)
    stats = json.loads(msg.data)
    execute = next(e for e in stats["endpoints"] if e["subject"] == subjects.EXECUTE)
    assert execute["num_requests"] >= 2
    assert execute["data"]["requests"] >= 2
    assert execute["data"]["errors_by_code"]["INVALID_REQUEST"] >= 1
    assert execute["data"]["latency_ms"]["p50"] is not None


async def test_each_node_answers_health_on_its_own_subject(nc):
    reply = await request_json(nc, subjects.node_health("test-node"), {})
    assert reply["node_id"] == "test-node"


async def test_replies_to_non_inbox_subjects_are_refused(nc):
    """A requester naming a foreign reply subject must not turn the node into its deputy."""
    victim = await nc.subscribe("strategy.results.someone-elses-job")
    await nc.publish(subjects.EXECUTE, json.dumps({"code": "def strategy(d): return 'BUY'",
                                                   "bars": columnar_bars(3)}).encode(),
                     reply="strategy.results.someone-elses-job")
    import nats.errors

    try:
        await victim.next_msg(timeout=1.5)
        raise AssertionError("the node replied to a non-inbox subject")
    except nats.errors.TimeoutError:
        pass
    finally:
        await victim.unsubscribe()
    assert (await request_json(nc, subjects.HEALTH, {}))["status"] == "ok"
