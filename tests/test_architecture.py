"""The package's shape: every module imports on its own, imports flow one way, and a
channel, a filter node or a step has one home."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_engage"

#: Lowest first; a module may import modules of its own layer or below, never above.
#: ``extension`` is the composition root: it wires the HTTP, admin and CLI layers,
#: which reach the Engage object through ``current_app.extensions["engage"]``.
LAYERS = [
    {"errors", "values", "signals", "models", "config", "addresses", "changes"},
    {"db", "outbox", "migrations"},
    {"tracking", "segments", "channels", "messages.templates"},
    {"messages", "automations", "lists", "merge", "customers", "importer", "demo"},
    {"jobs", "hooks"},
    {"operations", "status"},
    {"blueprints", "admin", "cli"},
    {"extension", "__init__", "testing"},
]


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        if relative.parts[0] == "migrations" and relative.parts[-1] != "__init__":
            continue  # Alembic's env and versions run inside Alembic
        parts = [p for p in relative.parts if p != "__init__"] or ["__init__"]
        names.append(".".join(parts))
    return names


def layer(module: str) -> int:
    for rank in range(len(LAYERS) - 1, -1, -1):
        for prefix in LAYERS[rank]:
            if module == prefix or module.startswith(prefix + "."):
                best = rank
                # the most specific prefix decides (messages.templates before messages)
                specific = [
                    (len(p), r)
                    for r, group in enumerate(LAYERS)
                    for p in group
                    if module == p or module.startswith(p + ".")
                ]
                return max(specific)[1] if specific else best
    raise AssertionError(f"flask_engage.{module} is in no layer: add it to LAYERS")


def engage_imports(module: str) -> list[tuple[str, bool]]:
    """(imported Engage module, inside a function) for every import of ``module``."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    if module == "__init__":
        path = PACKAGE / "__init__.py"
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    if module == "__init__":
        package = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, in_function: bool, in_type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            checking = in_type_checking or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            if isinstance(child, ast.ImportFrom) and not checking:
                if child.level:
                    base = package[: len(package) - child.level + 1]
                    target = ".".join([*base, *(child.module or "").split(".")]).strip(".")
                    if child.module:
                        names = [target]
                    else:  # from . import x: a submodule, or a name of the package
                        names = [
                            ".".join([*base, alias.name])
                            if (
                                PACKAGE.joinpath(*base, alias.name + ".py").exists()
                                or PACKAGE.joinpath(*base, alias.name).is_dir()
                            )
                            else ".".join(base) or "__init__"
                            for alias in child.names
                        ]
                    found.extend((name, inner) for name in names)
                elif (child.module or "").startswith("flask_engage"):
                    found.append((child.module.removeprefix("flask_engage").strip("."), inner))
            visit(child, inner, checking)

    visit(tree, False, False)
    return found


def test_no_engage_module_is_imported_inside_a_function():
    inside = [
        f"{module} imports {target}"
        for module in modules()
        for target, in_function in engage_imports(module)
        if in_function
    ]
    assert inside == []


def test_imports_flow_one_way():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module in modules()
        for target, _ in engage_imports(module)
        if target and layer(target) > layer(module)
    ]
    assert upward == []


#: Imports third-party libraries once, then forks a child per Engage module: each child
#: starts with no Engage module loaded, so an import cycle among them shows.
FORK_EACH = """
import os, sys
import alembic.command, flask, flask_admin, flask_mail, flask_sqlalchemy, jinja2.sandbox
import pywebpush, redis, rq, sqlalchemy, sqlalchemy.dialects.postgresql
assert not [m for m in sys.modules if m.startswith("flask_engage")]
failed = []
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(name)
        except BaseException as exc:
            os.write(write, f"{name}: {type(exc).__name__}: {exc}".encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    message = os.read(read, 4096).decode()
    os.close(read)
    if status:
        failed.append(message or f"{name}: exit {status}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    names = ["flask_engage" if m == "__init__" else f"flask_engage.{m}" for m in modules()]
    result = subprocess.run(
        [sys.executable, "-c", FORK_EACH, *names], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("names", [("email", "push", "in_app")])
def test_channel_names_are_written_in_one_place(names):
    """Only the channel modules name channels; everything else reads the registry."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "channels" in path.parts or "migrations" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if all(f'"{name}"' in text for name in names):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
