"""The calling tenant's quotas of hosted objects: `strategy.v1.quotas`.

| subject | request -> reply |
|---|---|
| `strategy.v1.quotas` | QuotaRequest (no fields; an empty body is one) -> QuotaReply |

The tenant is the verified NATS caller, as on every hosting subject (node/hosting/naming.py):
a tenant sees its own counts and never another's. Each `Quota` gives the node setting that
holds the limit, the limit and what the tenant has now, counted from Key-Value at the moment of
the request (node/hosting/quotas.py), and what a creating operation at the limit meets:

* `refused`: the create is refused with INVALID_REQUEST naming the setting (strategies,
  deployments, secrets);
* `oldest_unused_dropped`: a new version is stored and the strategy's oldest versions that no
  deployment runs are dropped (versions per strategy; refused only when deployments run every
  stored version). `used` is the most versions any one strategy has, `strategy` names it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .errors import ErrorInfo

QuotaName = Literal["strategies", "versions_per_strategy", "deployments", "secrets"]
AtLimit = Literal["refused", "oldest_unused_dropped"]


class QuotaRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """No options: any field is refused (INVALID_REQUEST naming it)."""


class Quota(msgspec.Struct, kw_only=True):
    name: QuotaName
    setting: str  # the node's environment variable that holds the limit
    limit: int
    used: int
    at_limit: AtLimit
    strategy: str | None = None  # versions_per_strategy: the strategy with the most versions


class QuotaReply(msgspec.Struct, kw_only=True):
    ok: bool = False
    tenant: str = ""
    quotas: list[Quota] = []
    error: ErrorInfo | None = None
    node_id: str = ""
