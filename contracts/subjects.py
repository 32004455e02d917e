"""Subject names, service identity and headers of the v1 contract."""

SERVICE_NAME = "strategy-exec"
QUEUE_GROUP = "strategy-exec"

PREFIX = "strategy.v1"
EXECUTE = f"{PREFIX}.execute"
VALIDATE = f"{PREFIX}.validate"
BACKTEST = f"{PREFIX}.backtest"
HEALTH = f"{PREFIX}.health"

CONTENT_TYPE = "Content-Type"
MSGPACK = "application/msgpack"
JSON = "application/json"
