"""Page modules of the dashboard; each exposes `routes: list[starlette.routing.BaseRoute]`.

deployments (the list, its live stream and the control buttons), deployment (one deployment:
runs, logs, signals chart, state, env/secret names, version diff), fleet, and, from their own
commits, strategies and backtest.
"""
