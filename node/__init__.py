"""The strategy execution node: NATS service, CLI and client."""

__version__ = "1.0.0"

from .client import StrategyClient, connect  # noqa: E402
from .config import Settings  # noqa: E402

__all__ = ["StrategyClient", "Settings", "connect", "__version__"]
