"""Every error Kilnbase builds in InsForge's shape tells the caller what to do next (`nextActions`).

A static check over the source: each call of `ApiError(...)`, `error_response(...)` or `error_body(...)`, of
a subclass of `ApiError`, and of a helper that passes its own `next_actions` parameter on to one of these,
must give a next action that is not `None` or empty (a helper's default counts where a call leaves it out).
Names are resolved through each module's own definitions and imports, so two helpers of the same name in
different modules are not confused.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kilnbase

PACKAGE = Path(kilnbase.__file__).parent
ERRORS = "kilnbase.http.errors"
#: The builders themselves, and where their next action goes among the positional arguments.
BUILDERS = {(ERRORS, "ApiError"): 3, (ERRORS, "error_response"): 3, (ERRORS, "error_body"): 3}
PARAMETER = "next_actions"

#: The functions whose errors may go without a next action (`module:function`), each with the reason. Keep
#: it empty unless a next action truly cannot help the caller.
EXEMPT: dict[str, str] = {}

Name = tuple[str, str]  # (module, name)
Call = tuple["Module", ast.AST | None, ast.Call, Name]  # (module, enclosing function, call, what it calls)


@dataclass(frozen=True)
class Builder:
    """A callable that makes an error in InsForge's shape: where its next action goes, and its default."""

    index: int | None  # None: keyword-only
    default: ast.expr | None = None


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    defined: set[str] = field(default_factory=set)
    imported: dict[str, Name] = field(default_factory=dict)  # local name -> (module, name)
    modules: dict[str, str] = field(default_factory=dict)  # local name -> module

    def resolve(self, func: ast.expr) -> Name | None:
        if isinstance(func, ast.Name):
            if func.id in self.defined:
                return self.name, func.id
            return self.imported.get(func.id)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in ("self", "cls"):
                return self.name, func.attr
            if func.value.id in self.modules:
                return self.modules[func.value.id], func.attr
        return None


def _modules() -> dict[str, Module]:
    names = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    modules = {}
    for name, path in names.items():
        module = Module(name, path, ast.parse(path.read_text(), str(path)))
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                module.defined.add(node.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    local = alias.asname or alias.name
                    if f"{node.module}.{alias.name}" in names:
                        module.modules[local] = f"{node.module}.{alias.name}"
                    else:
                        module.imported[local] = (node.module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    module.modules[alias.asname or alias.name] = alias.name
        modules[name] = module
    return modules


def _canonical(modules: dict[str, Module], name: Name | None) -> Name | None:
    """`name` followed through re-exports to the module that defines it."""
    for _ in range(10):
        if name is None or name[0] not in modules or name[1] in modules[name[0]].defined:
            return name
        name = modules[name[0]].imported.get(name[1])
    return name


def _calls(modules: dict[str, Module]) -> list[Call]:
    """Every call in the package whose callee is known, with its module and the function it is in."""

    def visit(module: Module, node: ast.AST, function: ast.AST | None) -> Iterator[Call]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Call):
                called = _canonical(modules, module.resolve(child.func))
                if called is not None:
                    yield module, function, child, called
            yield from visit(module, child, inner)

    return [call for module in modules.values() for call in visit(module, module.tree, None)]


def _given(call: ast.Call, builder: Builder) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == PARAMETER:
            return keyword.value
    if builder.index is not None and len(call.args) > builder.index:
        return call.args[builder.index]
    return builder.default


def _helper(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Builder:
    args = function.args
    positional = [arg.arg for arg in args.posonlyargs + args.args]
    if PARAMETER in positional:
        index = positional.index(PARAMETER)
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        defaults += args.defaults
        return Builder(index - (positional[0] in ("self", "cls")), defaults[index])
    keyword_only = [arg.arg for arg in args.kwonlyargs]
    return Builder(None, args.kw_defaults[keyword_only.index(PARAMETER)])


def _builders(modules: dict[str, Module], calls: list[Call]) -> dict[Name, Builder]:
    """The builders, the subclasses of `ApiError` and the helpers that pass their own `next_actions` on to
    a builder, looked for until no more are found."""
    builders = {name: Builder(index) for name, index in BUILDERS.items()}
    while True:
        found = dict(builders)
        for module in modules.values():
            for node in ast.walk(module.tree):
                if isinstance(node, ast.ClassDef):
                    for base in node.bases:
                        resolved = _canonical(modules, module.resolve(base))
                        if resolved in builders:
                            found.setdefault((module.name, node.name), builders[resolved])
        for module, function, call, called in calls:
            if called in builders and isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                given = _given(call, builders[called])
                if isinstance(given, ast.Name) and given.id == PARAMETER:
                    found.setdefault((module.name, function.name), _helper(function))
        if found.keys() == builders.keys():
            return builders
        builders = found


@functools.cache
def _analysis() -> tuple[list[Call], dict[Name, Builder]]:
    modules = _modules()
    calls = _calls(modules)
    return calls, _builders(modules, calls)


def _function_of(module: Module, function: ast.AST | None) -> str:
    return f"{module.name}:{getattr(function, 'name', '<module>')}"


def _offenders() -> list[str]:
    calls, builders = _analysis()
    offenders = []
    for module, function, call, called in calls:
        if called not in builders or _function_of(module, function) in EXEMPT:
            continue
        given = _given(call, builders[called])
        unknowable = any(isinstance(arg, ast.Starred) for arg in call.args) or any(
            keyword.arg is None for keyword in call.keywords
        )
        if unknowable or given is None or (isinstance(given, ast.Constant) and given.value in (None, "")):
            where = f"{module.path.relative_to(PACKAGE.parent)}:{call.lineno}"
            offenders.append(f"{where}: {ast.unparse(call)[:120]}")
    return sorted(offenders)


def test_every_error_says_what_to_do_next() -> None:
    offenders = _offenders()
    assert not offenders, f"{len(offenders)} errors without a next action:\n" + "\n".join(offenders)


def test_the_check_sees_the_builders_and_their_helpers() -> None:
    """The check finds what it is meant to check (not an empty walk that passes)."""
    _calls, builders = _analysis()
    assert set(BUILDERS) | {("kilnbase.database.database_errors", "DatabaseFailure")} <= builders.keys()
    assert {("kilnbase.storage.names", "invalid"), ("kilnbase.storage.tus", "_tus_error")} <= builders.keys()


def test_exemptions_name_functions_that_build_errors() -> None:
    calls, builders = _analysis()
    building = {
        _function_of(module, function) for module, function, _c, called in calls if called in builders
    }
    assert set(EXEMPT) <= building, "an exemption names a function that no longer builds an error"
