"""The `strategy-node` command line: one module per command group.

app.py builds the parser and dispatches; connect.py is the shared fail-fast connection; each other
module registers and runs one group of commands. `strategy-node = "node.cli:main"` (pyproject.toml).
"""

from .app import build_parser, main

__all__ = ["build_parser", "main"]
