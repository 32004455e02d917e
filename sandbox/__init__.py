"""The sandbox: policy and compiler for untrusted strategies, and the process pool that runs them."""

from .compiler import CompileCache, CompiledStrategy, compile_strategy
from .pool import SandboxPool, SandboxUnavailable
from .protocol import Job, Outcome, OutputLimits
from .warm import TenantWorkers, WarmPolicy

__all__ = [
    "CompileCache", "CompiledStrategy", "compile_strategy",
    "SandboxPool", "SandboxUnavailable",
    "Job", "Outcome", "OutputLimits",
    "TenantWorkers", "WarmPolicy",
]
