"""Hosted strategies: a tenant's strategies live in the fleet and run on every new bar.

One module per concept:

* `naming`      tenant tokens, keys, subjects (the tenant is the verified NATS identity)
* `streams`     the JetStream streams and Key-Value buckets, declared idempotently
* `registry`    strategies and their immutable versions (KV STRATEGIES)
* `deployments` deployments and their watchable status (KV DEPLOYMENTS, DEPLOYMENT_STATUS)
* `control`     the `strategy.v1.strategies.*` / `strategy.v1.deployments.*` handlers
* `triggers`    the fan-out of new bars into STRATEGY_TRIGGERS and the shared pull consumer
* `runs`        one run of one trigger: overlap, lookback, sandbox, signal, record
* `state`       a deployment's persisted `state` mapping
* `logs`        run logs on STRATEGY_LOGS
* `window`      the lookback window from the bar store, cached per series
* `client`      the Python client operations
* `service`     wires it all into a node
"""
