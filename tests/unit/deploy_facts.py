"""Facts about the code that the deployment files must agree with, read from the code itself.

Shared by the tests of the Dockerfile, the Kubernetes manifests and the compose file: which
environment variables the shipped code reads (found by reading its source, apart from any
manifest), and what a container's command means to the script it runs (parsed by that script's
own argument parser, in this process).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock

from tests.unit.conftest import ROOT

PACKAGE = ROOT / "ecom_pipeline"
# The top-level scripts: every Python file at the root of the checkout.
SCRIPTS = sorted(path.name for path in ROOT.glob("*.py"))
# The package with its sub-packages (ecom_pipeline/consumer/), and the scripts.
PACKAGE_SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
SHIPPED_SOURCES = PACKAGE_SOURCES + [ROOT / name for name in SCRIPTS]
_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*")


def _is_process_environment(parameter: ast.arg) -> bool:
    """The package receives the environment as a parameter `environ: Mapping[str, str]` (only
    the scripts read `os.environ`). Neither a WSGI app's `environ: dict[str, object]` (a request)
    nor another mapping of strings (a message's `attributes`) is the environment."""
    if parameter.arg != "environ" or parameter.annotation is None:
        return False
    text = ast.unparse(parameter.annotation)
    return "[str, str]" in text or "_Environ" in text


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    args = node.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    every += [a for a in (args.vararg, args.kwarg) if a is not None]
    return every


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "text"` assignments."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants[node.target.id] = node.value.value
    return constants


class _EnvironmentReads(ast.NodeVisitor):
    """Every variable name read from the process environment in one module: `os.environ.get("X")`,
    `os.environ["X"]`, `os.getenv("X")`, `"X" in environ`, the same through a parameter holding
    the environment, and a helper handed the environment and a name (`_number(environ, "X", ...)`).
    A name given as a module constant is resolved; one the scan cannot resolve is recorded."""

    def __init__(self, constants: dict[str, str]) -> None:
        self.constants = constants
        self.scopes: list[tuple[set[str], set[str]]] = []  # (parameters, those holding the environment)
        self.found: set[str] = set()
        self.unresolved: list[str] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        parameters = _parameters(node)
        names = {a.arg for a in parameters}
        environment = {a.arg for a in parameters if _is_process_environment(a)}
        self.scopes.append((names, environment))
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def _is_environment(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "environ":
            return isinstance(node.value, ast.Name) and node.value.id == "os"
        if isinstance(node, ast.Name):
            for names, environment in reversed(self.scopes):  # the innermost function that names it
                if node.id in names:
                    return node.id in environment
        return False

    def _is_parameter(self, name: str) -> bool:
        return any(name in names for names, _ in self.scopes)

    def _key(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.found.add(node.value)
        elif isinstance(node, ast.Name) and node.id in self.constants:
            self.found.add(self.constants[node.id])
        elif isinstance(node, ast.Name) and self._is_parameter(node.id):
            pass  # a helper's parameter: its callers hand it the name, and are scanned too
        else:
            self.unresolved.append(ast.unparse(node))

    def _looks_up_one_name(self, func: ast.expr) -> bool:
        """`environ.get(name, ...)` or `os.getenv(name, ...)`."""
        if not isinstance(func, ast.Attribute):
            return False
        if func.attr == "get":
            return self._is_environment(func.value)
        return func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"

    def visit_Call(self, node: ast.Call) -> None:
        if self._looks_up_one_name(node.func) and node.args:
            self._key(node.args[0])
        elif any(self._is_environment(arg) for arg in node.args):
            handed = [*node.args, *(keyword.value for keyword in node.keywords)]
            texts = [v.value for v in handed if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            self.found.update(text for text in texts if _VARIABLE.fullmatch(text))
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load) and self._is_environment(node.value):
            self._key(node.slice)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn) and self._is_environment(right):
                self._key(node.left)
        self.generic_visit(node)


@functools.cache  # the source does not change during a test run
def environment_reads(sources: tuple[Path, ...] = tuple(SHIPPED_SOURCES)) -> dict[str, set[str]]:
    """{variable: the files (relative to the checkout) that read it} over the shipped code.

    Raises `AssertionError` for a read whose name the scan cannot work out, so that a new way of
    reading the environment fails here instead of passing unseen."""
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in sources}
    every_constant: dict[str, str] = {}
    for tree in trees.values():
        every_constant.update(_string_constants(tree))  # e.g. MULTIPROCESS_DIR, imported by the cli package
    reads: dict[str, set[str]] = {}
    for path, tree in trees.items():
        visitor = _EnvironmentReads({**every_constant, **_string_constants(tree)})
        visitor.visit(tree)
        assert not visitor.unresolved, (
            f"{path.name} reads a variable whose name is not worked out: {visitor.unresolved}"
        )
        for name in visitor.found:
            reads.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return reads


@dataclass(frozen=True)
class ParsedCommand:
    """A container's command as its script understood it."""

    target: str  # the script's file name, or the module run with -m
    arguments: argparse.Namespace


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def _main_of(argv: Sequence[str]) -> tuple[str, Callable[[list[str]], Any], list[str]]:
    """What `python ARGV...` runs: (target, its `main`, the arguments it gets)."""
    if argv[0] == "-m":
        module_name, rest = argv[1], list(argv[2:])
        return module_name, importlib.import_module(module_name).main, rest
    script, rest = argv[0], list(argv[1:])
    assert script in SCRIPTS, f"{script!r} is not one of the project's scripts {SCRIPTS}"
    return script, importlib.import_module(Path(script).stem).main, rest


def parse_command(argv: Sequence[str]) -> ParsedCommand:
    """Run the script's own `main(argv)` until its parser has parsed, and stop it there.

    `argparse.ArgumentParser.parse_args` is wrapped so that the real parser parses (a flag the
    script does not take, or a value out of range, exits 2 as it would in a container) and the
    result is captured before the script connects to anything."""
    target, main, rest = _main_of(argv)
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        raise _Parsed(parse_args(self, *args, **kwargs))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        try:
            main(rest)
        except _Parsed as parsed:
            return ParsedCommand(target, parsed.namespace)
        except SystemExit as exc:
            raise AssertionError(f"{' '.join(argv)}: refused by its parser (exit status {exc.code})") from exc
    raise AssertionError(f"{' '.join(argv)}: main() returned without parsing its arguments")
