"""Subject names, service identity and headers of the v1 contract."""

SERVICE_NAME = "strategy-exec"
QUEUE_GROUP = "strategy-exec"

PREFIX = "strategy.v1"
EXECUTE = f"{PREFIX}.execute"
VALIDATE = f"{PREFIX}.validate"
BACKTEST = f"{PREFIX}.backtest"
HEALTH = f"{PREFIX}.health"
SCREEN = f"{PREFIX}.screen"
# One grid point of a sweep, fanned out by the node that received the sweep (own admission).
BACKTEST_POINT = f"{BACKTEST}.point"

# Durable jobs (JetStream): publish a request to JOBS.<kind>; results are kept under RESULTS.<job id>.
JOBS = "strategy.jobs"
RESULTS = "strategy.results"
DEAD = "strategy.dead"
JOB_REPLY_HEADER = "Strategy-Reply-To"
# A tenant in an account of its own publishes JOBS.<kind> through its import; the server stores it
# under JOBS.<account>.<kind> (export guarded by account_token_position; node/identity.py).
TENANT_JOBS = f"{JOBS}.{{account}}.{{kind}}"

# Hosted strategies (contracts/hosting.py): control requests on the same service, one subject each.
STRATEGIES = f"{PREFIX}.strategies"
DEPLOYMENTS = f"{PREFIX}.deployments"
STRATEGY_OPS = ("put", "get", "list", "versions", "delete")
DEPLOYMENT_OPS = ("create", "update", "get", "list", "pause", "resume", "stop", "delete", "run", "runs", "history",
                  "deploy", "state", "logs")
SECRETS = f"{PREFIX}.secrets"  # contracts/secrets.py
SECRET_OPS = ("put", "list", "delete", "rotate")
QUOTAS = f"{PREFIX}.quotas"  # the calling tenant's quotas of hosted objects (contracts/quotas.py)
# Results of hosted runs: signals.<tenant>.<deployment>.<symbol>, strategy.logs.<tenant>.<deployment>;
# work items strategy.triggers.<tenant>.<deployment> (nodes only).
SIGNALS = "signals"
LOGS = "strategy.logs"
TRIGGERS = "strategy.triggers"

# Stamped by nats-server on a request that crossed a service import: JSON with `acc` (and `user`
# when the import has `share: true`). The node trusts only that, never a body field alone.
REQUEST_INFO_HEADER = "Nats-Request-Info"

CONTENT_TYPE = "Content-Type"
MSGPACK = "application/msgpack"
JSON = "application/json"


def node_health(node_id: str) -> str:
    """One node's own health subject (for probes): `strategy.v1.health.<node_id>`."""
    token = "".join(c if c.isalnum() or c in "-_" else "_" for c in node_id)
    return f"{HEALTH}.{token}"


def tenant_jobs(account: str, kind: str) -> str:
    """Where a tenant's durable job is stored: `strategy.jobs.<account>.<kind>`."""
    return TENANT_JOBS.format(account=account, kind=kind)
