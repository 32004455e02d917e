"""Static bounds of the wire contract; a node's own config may only tighten them."""

MAX_CODE_CHARS = 64 * 1024
MAX_BARS = 2_000_000
MAX_ID_CHARS = 128
MAX_PARAMETERS = 256
MAX_TIMEOUT_MS = 600_000
MIN_MEMORY_MB = 32
MAX_MEMORY_MB = 8192
MAX_GRID_POINTS = 10_000
MAX_SYMBOLS = 1_000
# Free-form values (`parameters`, `grid`; contracts/values.py), checked at decode on every path.
MAX_VALUE_DEPTH = 32
MAX_PARAMETERS_BYTES = 1024 * 1024
MAX_GRID_VALUE_BYTES = 256
MAX_SWEEP_PARAMETER_BYTES = 16 * 1024 * 1024
