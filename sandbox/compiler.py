"""Compile strategy source under RestrictedPython plus the sandbox's own AST policy.

`compile_strategy` parses, checks and rewrites the AST (RestrictedPython's transformer, extended
by `StrategyPolicy`) and compiles it. It raises `ExecutionError(COMPILE_ERROR)` for code that is
not valid Python and `ExecutionError(SECURITY_VIOLATION)` for code the policy refuses, both with
the 1-based line and without host paths. `CompileCache` is a bounded LRU over it.

What `StrategyPolicy` adds to RestrictedPython:
  * imports must name an allowlisted module (`sandbox.policy.IMPORTABLE_MODULES`), `from m import
    n` must name something m's proxy exposes, relative imports are refused;
  * keyword arguments may not start with "_" (`f(_private=1)`);
  * attribute names in `policy.DENIED_ATTRIBUTES` (frames, code, globals, mro, ctypes ...) are
    refused statically, on any object;
  * attribute stores / deletes call `_write_attr_` (item stores keep `_write_`), so the run time
    can treat `obj.x = v` and `obj[k] = v` differently;
  * `obj.x += v` and `obj[k] += v` (refused by RestrictedPython) are rewritten into guarded
    read / in-place op / guarded write; `x: T = v` (refused by RestrictedPython) becomes `x = v`,
    except in a class body, where `name: T [= v]` keeps its annotation (dataclasses read it);
  * `nonlocal` (refused by RestrictedPython) is allowed for non-private names;
  * `x.__name__` (a private name) is read as `_name_of_(x)`: a string, never an object;
  * `match` statements (refused by RestrictedPython) are allowed: capture names follow the
    private-name rule, value and class patterns may name only attributes the policy allows on
    any object (they are read by C code, past `_getattr_`), class-pattern keywords likewise, and
    every case is guarded by `_match_vet_(captured names)` so captured values are vetted like an
    attribute read (sandbox.syntax_guards).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import marshal
import types
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from RestrictedPython.transformer import INSPECT_ATTRIBUTES, IOPERATOR_TO_STR, RestrictingNodeTransformer

from contracts.errors import ErrorCode, ExecutionError

from . import policy

Style = Literal["function", "script", "classify"]

_FORMAT_TAG = "sandbox.compiled/1"
_MAX_REPORTED_VIOLATIONS = 3


@dataclass(frozen=True, slots=True)
class CompiledStrategy:
    """A strategy that passed the policy: its code object and what the runtime needs to know."""

    source_hash: str
    code: types.CodeType = field(repr=False)
    style: Style
    imports: list[str]

    def to_bytes(self) -> bytes:
        """Marshal form, valid for the same Python version only (checked by `from_bytes`)."""
        return marshal.dumps(
            (_FORMAT_TAG, importlib.util.MAGIC_NUMBER, self.source_hash, self.style, tuple(self.imports), self.code)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CompiledStrategy:
        try:
            loaded = marshal.loads(data)
        except (EOFError, ValueError, TypeError) as exc:
            raise ValueError("not a compiled strategy") from exc
        if not (isinstance(loaded, tuple) and len(loaded) == 6 and loaded[0] == _FORMAT_TAG):
            raise ValueError("not a compiled strategy")
        _, magic, source_hash, style, imports, code = loaded
        if magic != importlib.util.MAGIC_NUMBER:
            raise ValueError("compiled strategy is from another Python version")
        if (
            not isinstance(source_hash, str)
            or style not in ("function", "script", "classify")
            or not isinstance(imports, tuple)
            or not all(isinstance(name, str) for name in imports)
            or not isinstance(code, types.CodeType)
        ):
            raise ValueError("malformed compiled strategy")
        return cls(source_hash=source_hash, code=code, style=style, imports=list(imports))


# ---------------------------------------------------------------------------------------------
# AST policy
# ---------------------------------------------------------------------------------------------


def _located(new: ast.AST, old: ast.AST) -> ast.AST:
    ast.copy_location(new, old)
    ast.fix_missing_locations(new)
    return new


def _has_slice(node: ast.expr) -> bool:
    if isinstance(node, ast.Slice):
        return True
    return isinstance(node, ast.Tuple) and any(isinstance(elt, ast.Slice) for elt in node.elts)


class StrategyPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer plus the sandbox's import/attribute/keyword rules."""

    def __init__(self) -> None:
        super().__init__()
        self.violations: list[tuple[int | None, str]] = []
        self.imports: list[str] = []

    def error(self, node: ast.AST, info: str) -> None:
        super().error(node, info)
        entry = (getattr(node, "lineno", None), info)
        if entry not in self.violations:
            self.violations.append(entry)

    # imports ---------------------------------------------------------------------------------

    def _note_import(self, dotted: str) -> None:
        top = dotted.partition(".")[0]
        if top not in self.imports:
            self.imports.append(top)

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            if alias.name not in policy.IMPORTABLE_MODULES:
                self.error(node, f'import of "{alias.name}" is not allowed')
            self._note_import(alias.name)
        return super().visit_Import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        module = node.module or ""
        if node.level:
            self.error(node, "relative imports are not allowed")
        elif module not in policy.IMPORTABLE_MODULES:
            self.error(node, f'import from "{module}" is not allowed')
        else:
            self._note_import(module)
            if module not in policy.API_MODULE_NAMES:
                for alias in node.names:
                    if alias.name != "*" and not policy.module_exports(module, alias.name):
                        self.error(node, f'"{alias.name}" is not available from "{module}"')
        return super().visit_ImportFrom(node)

    # calls and attributes --------------------------------------------------------------------

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg is not None and node.arg.startswith("_"):
            self.error(node, f'keyword argument "{node.arg}" is not allowed: names starting with "_" are private')
        return super().visit_keyword(node)

    def _check_attribute_name(self, node: ast.Attribute) -> None:
        name = node.attr
        if name.startswith("_") or name in INSPECT_ATTRIBUTES or name.endswith("__roles__"):
            return  # RestrictedPython reports these itself
        if name in policy.DENIED_ATTRIBUTES:
            self.error(node, f'"{name}" is not accessible in strategies')

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if node.attr == "__name__" and isinstance(node.ctx, ast.Load):
            call = ast.Call(func=ast.Name("_name_of_", ast.Load()), args=[self.visit(node.value)], keywords=[])
            return _located(call, node)
        self._check_attribute_name(node)
        ctx = node.ctx
        new = super().visit_Attribute(node)
        if isinstance(ctx, (ast.Store, ast.Del)) and isinstance(new, ast.Attribute):
            guard = new.value
            if isinstance(guard, ast.Call) and isinstance(guard.func, ast.Name) and guard.func.id == "_write_":
                guard.func.id = "_write_attr_"
        return new

    # statements RestrictedPython refuses that have a safe rewrite ------------------------------

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | list[ast.AST]:
        target = node.target
        if isinstance(target, ast.Name):
            return super().visit_AugAssign(node)
        op = IOPERATOR_TO_STR[type(node.op)]
        if isinstance(target, ast.Attribute):
            # same name checks as a plain attribute access
            probe = ast.Attribute(value=ast.Name("x", ast.Load()), attr=target.attr, ctx=ast.Load())
            _located(probe, target)
            before = len(self.errors)
            self.visit_Attribute(probe)
            if len(self.errors) != before:
                return node
            obj = self.visit(target.value)
            value = self.visit(node.value)
            tmp = self.gen_tmp_name()
            read = ast.Call(
                func=ast.Name("_getattr_", ast.Load()),
                args=[ast.Name(tmp, ast.Load()), ast.Constant(target.attr)],
                keywords=[],
            )
            store = ast.Attribute(
                value=ast.Call(func=ast.Name("_write_attr_", ast.Load()), args=[ast.Name(tmp, ast.Load())], keywords=[]),
                attr=target.attr,
                ctx=ast.Store(),
            )
        elif isinstance(target, ast.Subscript):
            if _has_slice(target.slice):
                self.error(node, "Augmented assignment of slices is not allowed.")
                return node
            obj = self.visit(target.value)
            key = self.visit(target.slice)
            value = self.visit(node.value)
            tmp = self.gen_tmp_name()
            tmp_key = self.gen_tmp_name()
            read = ast.Call(
                func=ast.Name("_getitem_", ast.Load()),
                args=[ast.Name(tmp, ast.Load()), ast.Name(tmp_key, ast.Load())],
                keywords=[],
            )
            store = ast.Subscript(
                value=ast.Call(func=ast.Name("_write_", ast.Load()), args=[ast.Name(tmp, ast.Load())], keywords=[]),
                slice=ast.Name(tmp_key, ast.Load()),
                ctx=ast.Store(),
            )
        else:  # pragma: no cover - the grammar allows nothing else
            self.error(node, "unsupported augmented assignment target")
            return node
        statements: list[ast.AST] = [ast.Assign(targets=[ast.Name(tmp, ast.Store())], value=obj)]
        if isinstance(target, ast.Subscript):
            statements.append(ast.Assign(targets=[ast.Name(tmp_key, ast.Store())], value=key))
        new_value = ast.Call(
            func=ast.Name("_inplacevar_", ast.Load()), args=[ast.Constant(op), read, value], keywords=[]
        )
        statements.append(ast.Assign(targets=[store], value=new_value))
        return [_located(statement, node) for statement in statements]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        for statement in node.body:  # `name: T [= v]` fields keep their annotations
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.simple:
                statement.sandbox_class_field = True  # type: ignore[attr-defined]
        return super().visit_ClassDef(node)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        for name in node.names:
            self.check_name(node, name)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | list[ast.AST]:
        if getattr(node, "sandbox_class_field", False):
            self.check_name(node.target, node.target.id)
            node.annotation = self.visit(node.annotation)
            if node.value is not None:
                node.value = self.visit(node.value)
            return node
        if node.value is None:
            if isinstance(node.target, ast.Name):
                self.check_name(node.target, node.target.id)
            else:
                self.visit(node.target)
            return _located(ast.Pass(), node)
        assign = _located(ast.Assign(targets=[node.target], value=node.value), node)
        return self.visit_Assign(assign)


    # match statements -------------------------------------------------------------------------

    def _check_pattern_attribute(self, node: ast.AST, name: str) -> None:
        """A name C code reads by itself in a pattern: allowed only if allowed on any object."""
        if (name.startswith("_") or name in policy.LIBRARY_DENIED_ATTRIBUTES
                or (name.startswith(policy.DENIED_ATTRIBUTE_PREFIXES)
                    and name not in policy.ALLOWED_PREFIXED_ATTRIBUTES)):
            self.error(node, f'"{name}" may not be read by a match pattern')

    def _check_dotted(self, expr: ast.expr) -> None:
        """Value patterns, mapping keys and pattern classes: a constant, a name or a dotted name."""
        if isinstance(expr, ast.Attribute):
            self._check_pattern_attribute(expr, expr.attr)
            self._check_dotted(expr.value)
        elif isinstance(expr, ast.Name):
            self.check_name(expr, expr.id)
        elif not isinstance(expr, (ast.Constant, ast.UnaryOp, ast.BinOp)):  # -1, 1+2j
            self.error(expr, "unsupported expression in a match pattern")

    def _captures(self, pattern: ast.AST) -> list[str]:
        names = []
        for sub in ast.walk(pattern):
            if isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
                names.append(sub.name)
            elif isinstance(sub, ast.MatchMapping) and sub.rest:
                names.append(sub.rest)
        return list(dict.fromkeys(names))

    def visit_Match(self, node: ast.Match) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_match_case(self, node: ast.match_case) -> ast.AST:
        node = self.node_contents_visit(node)
        names = self._captures(node.pattern)
        if names:
            vet = ast.Call(func=ast.Name("_match_vet_", ast.Load()),
                           args=[ast.Tuple([ast.Name(n, ast.Load()) for n in names], ast.Load())], keywords=[])
            node.guard = vet if node.guard is None else ast.BoolOp(ast.And(), [vet, node.guard])
            _located(node.guard, node.pattern)
        return node

    def visit_MatchValue(self, node: ast.MatchValue) -> ast.AST:
        self._check_dotted(node.value)
        return node

    def visit_MatchSingleton(self, node: ast.MatchSingleton) -> ast.AST:
        return node

    def visit_MatchSequence(self, node: ast.MatchSequence) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> ast.AST:
        for key in node.keys:
            self._check_dotted(key)
        if node.rest:
            self.check_name(node, node.rest)
        node.patterns = [self.visit(p) for p in node.patterns]
        return node

    def visit_MatchClass(self, node: ast.MatchClass) -> ast.AST:
        self._check_dotted(node.cls)
        for name in node.kwd_attrs:
            self._check_pattern_attribute(node, name)
        node.patterns = [self.visit(p) for p in node.patterns]
        node.kwd_patterns = [self.visit(p) for p in node.kwd_patterns]
        return node

    def visit_MatchStar(self, node: ast.MatchStar) -> ast.AST:
        if node.name:
            self.check_name(node, node.name)
        return node

    def visit_MatchAs(self, node: ast.MatchAs) -> ast.AST:
        if node.name:
            self.check_name(node, node.name)
        if node.pattern is not None:
            node.pattern = self.visit(node.pattern)
        return node

    def visit_MatchOr(self, node: ast.MatchOr) -> ast.AST:
        return self.node_contents_visit(node)


# ---------------------------------------------------------------------------------------------
# compile
# ---------------------------------------------------------------------------------------------


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


def _syntax_error(exc: SyntaxError) -> ExecutionError:
    line = exc.lineno if isinstance(exc.lineno, int) else None
    message = f"{type(exc).__name__}: {exc.msg}"
    if line is not None:
        message += f" (line {line})"
    return ExecutionError(ErrorCode.COMPILE_ERROR, message, line)


def _too_complex() -> ExecutionError:
    return ExecutionError(ErrorCode.COMPILE_ERROR, "SyntaxError: code is nested too deeply or too large", None)


def _style_of(tree: ast.Module) -> Style:
    names = {stmt.name for stmt in tree.body if isinstance(stmt, ast.FunctionDef)}
    if "strategy" in names:
        return "function"
    if "classify_symbol" in names:
        return "classify"
    return "script"


_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Pass)


def _check_entry_point(tree: ast.Module, style: Style) -> None:
    """Code that only defines things (and so would do nothing when run) has no entry point."""
    if style != "script":
        return
    if any(
        not isinstance(stmt, _DEFINITIONS) and not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
        for stmt in tree.body
    ):
        return
    names = sorted(stmt.name for stmt in tree.body if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)))
    raise ExecutionError(
        ErrorCode.COMPILE_ERROR,
        "no entry point: define `strategy(data)` or `classify_symbol(symbol)`, or write top-level "
        f"script code (this code only defines: {', '.join(names) or 'nothing'})",
        None,
    )


def _violation_error(violations: list[tuple[int | None, str]]) -> ExecutionError:
    parts = []
    for line, info in violations[:_MAX_REPORTED_VIOLATIONS]:
        parts.append(f"{info} (line {line})" if line is not None else info)
    message = "; ".join(parts)
    if len(violations) > _MAX_REPORTED_VIOLATIONS:
        message += f" (and {len(violations) - _MAX_REPORTED_VIOLATIONS} more)"
    return ExecutionError(ErrorCode.SECURITY_VIOLATION, message, violations[0][0])


def _compile(source: str, digest: str, filename: str, entry_point: bool = False) -> CompiledStrategy:
    if not isinstance(source, str):
        raise TypeError("strategy source must be a str")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(source, filename, "exec")
        except SyntaxError as exc:
            raise _syntax_error(exc) from None
        except ValueError as exc:  # e.g. NUL bytes
            raise ExecutionError(ErrorCode.COMPILE_ERROR, f"SyntaxError: {exc}", None) from None
        except (RecursionError, MemoryError):
            raise _too_complex() from None
        style = _style_of(tree)
        checker = StrategyPolicy()
        try:
            tree = checker.visit(tree)
        except (RecursionError, MemoryError):
            raise _too_complex() from None
        if checker.violations:
            raise _violation_error(checker.violations)
        if checker.errors:  # pragma: no cover - every error goes through StrategyPolicy.error
            raise ExecutionError(ErrorCode.SECURITY_VIOLATION, "; ".join(checker.errors), None)
        if entry_point:
            _check_entry_point(tree, style)
        try:
            code = compile(tree, filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise _syntax_error(exc) from None
        except (RecursionError, MemoryError, ValueError):
            raise _too_complex() from None
    return CompiledStrategy(source_hash=digest, code=code, style=style, imports=checker.imports)


def compile_strategy(source: str, filename: str = "<strategy>", *, entry_point: bool = False) -> CompiledStrategy:
    """Check and compile strategy source; see the module docstring for what is refused.

    `entry_point=True` (what the node asks for) also refuses code that only defines things.
    """
    if not isinstance(source, str):
        raise TypeError("strategy source must be a str")
    return _compile(source, source_hash(source), filename, entry_point)


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    code: ErrorCode
    message: str
    line: int | None


class CompileCache:
    """Bounded LRU of compile results keyed by the source's sha256 (failures are cached too)."""

    def __init__(self, maxsize: int = 512, *, entry_point: bool = True) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.entry_point = entry_point
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, CompiledStrategy | _Failure] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, source: str) -> tuple[CompiledStrategy, bool]:
        """(compiled, hit). Raises the same ExecutionError as compile_strategy for bad code."""
        if not isinstance(source, str):
            raise TypeError("strategy source must be a str")
        digest = source_hash(source)
        entry = self._entries.get(digest)
        if entry is not None:
            self._entries.move_to_end(digest)
            self.hits += 1
            if isinstance(entry, _Failure):
                raise ExecutionError(entry.code, entry.message, entry.line)
            return entry, True
        self.misses += 1
        try:
            compiled = _compile(source, digest, "<strategy>", self.entry_point)
        except ExecutionError as exc:
            self._store(digest, _Failure(exc.code, exc.message, exc.line))
            raise
        self._store(digest, compiled)
        return compiled, False

    def _store(self, digest: str, entry: CompiledStrategy | _Failure) -> None:
        self._entries[digest] = entry
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
