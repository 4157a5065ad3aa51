"""The package's layout stays true: imports point one way (docs/architecture.md).

``api``, ``control`` and ``upstream`` → ``persons`` → ``face``, ``store``. ``persons``, ``face`` and ``store``
never reach FastAPI or Starlette; ``persons`` never reaches ``api``, ``control`` or ``upstream``; ``control`` and
``api`` never import each other, and ``api`` never imports ``upstream`` (the app factory puts their hooks into the
persons request's chain, whose protocol lives in persons); ``runtime.py`` reaches no HTTP module. ``ops.timing``,
``ops.observe`` and ``ops.memory`` are leaves that anyone may import. Every import counts, also those inside
functions; "reaches" follows imports through the package transitively.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emulator"
HTTP = ("fastapi", "starlette", "uvicorn")
LEAVES = ("emulator.ops.timing", "emulator.ops.observe", "emulator.ops.memory")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: Iterable[str], name: str | None = None) -> set[str]:
    """Every module ``path`` (the module ``name``) imports: top-level names for outside packages, full names for
    ours."""
    known = set(known)
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    ours = {name for name in found if name.split(".")[0] == "emulator"}
    # Importing a module runs its packages' __init__ too.
    for imported in list(ours):
        parts = imported.split(".")
        ours.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known)
    return ours | {imported.split(".")[0] for imported in found if imported.split(".")[0] != "emulator"}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def reach(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through the package's own modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), set()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _in(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Every wrong-way arrow of ``graph`` (module -> imported modules), as readable lines."""
    found = []
    for module in sorted(graph):
        direct = graph[module]
        reached = reach(graph, module)
        if _in(module, *LEAVES):
            found += [f"{module} -> {t}: a leaf imports nothing of ours" for t in direct if _in(t, "emulator")]
        if _in(module, "emulator.persons", "emulator.face", "emulator.store"):
            found += [f"{module} reaches {t}: no HTTP below the wire" for t in reached if _in(t, *HTTP)]
            upward = ("emulator.api", "emulator.control", "emulator.upstream", "emulator.app", "emulator.runtime")
            upward += ("emulator.cli",)
            found += [f"{module} reaches {t}: points upward" for t in reached if _in(t, *upward)]
            ops = [t for t in reached if _in(t, "emulator.ops") and not _in(t, *LEAVES) and t != "emulator.ops"]
            found += [f"{module} reaches {t}: only the ops leaves are below" for t in ops]
        rules = (
            ("emulator.face", ("emulator.persons", "emulator.store"), "face is dlib only"),
            ("emulator.store", ("emulator.persons",), "the store knows no persons logic"),
            ("emulator.control", ("emulator.api",), "control never imports api"),
            ("emulator.api", ("emulator.control",), "api knows control only through the hook chain"),
            ("emulator.api", ("emulator.face", "emulator.store"), "api goes through persons"),
            ("emulator.api", ("emulator.upstream",), "api knows upstream only through the hook chain"),
        )
        for package, forbidden, why in rules:
            if _in(module, package):
                found += [f"{module} -> {t}: {why}" for t in direct if _in(t, *forbidden)]
        if module == "emulator.runtime":
            http = HTTP + ("emulator.api", "emulator.control.routes", "emulator.control.ui", "emulator.control.access")
            http += ("emulator.ops.health", "emulator.ops.metrics")
            found += [f"{module} reaches {t}: runtime imports no HTTP module" for t in reached if _in(t, *http)]
    return sorted(set(found))


def test_imports_point_one_way() -> None:
    graph = import_graph()
    assert {"emulator.persons.service", "emulator.api.routes", "emulator.control.faults"} <= set(graph)
    assert violations(graph) == []


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("emulator.persons.service", "emulator.api.routes"),
        ("emulator.persons.index", "fastapi"),
        ("emulator.control.faults", "emulator.api.requests"),
        ("emulator.api.routes", "emulator.control.faults"),
        ("emulator.store.sqlite", "emulator.persons.types"),
        ("emulator.face.engine", "emulator.ops.metrics"),
        ("emulator.ops.timing", "emulator.settings"),
        ("emulator.api.oauth_route", "emulator.upstream.cassette"),
        ("emulator.persons.hooks", "emulator.upstream.cassette"),
    ],
)
def test_a_wrong_way_arrow_is_caught(module: str, target: str) -> None:
    graph = {name: set(targets) for name, targets in import_graph().items()}
    graph[module].add(target)
    assert any(line.startswith(module) for line in violations(graph))


def test_runtime_reaching_http_through_another_module_is_caught() -> None:
    graph = {name: set(targets) for name, targets in import_graph().items()}
    graph["emulator.control.journal"].add("starlette")  # runtime imports the journal
    assert any(line.startswith("emulator.runtime reaches starlette") for line in violations(graph))


def test_relative_and_function_level_imports_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from ..api import envelope\n    import fastapi\n")
    found = imports_of(source, modules(), name="emulator.persons.probe")
    assert found >= {"emulator.api.envelope", "emulator.api", "emulator", "fastapi"}


def test_public_entry_points_resolve() -> None:
    """The public paths (the docs, the Dockerfile and users' conftest files name them) are where they were."""
    from emulator import app, cli, healthcheck, pytest_plugin

    assert callable(app.app_from_env) and callable(cli.main) and callable(healthcheck.main)
    assert callable(pytest_plugin.smarty_emulator)
