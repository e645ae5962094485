"""The package's shape: no import cycles, the library apart from its applications, small modules.

Imports are read with ``ast`` (lazy imports inside functions included), so the checks do not
depend on what happens to be imported at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "havic"
# Applications built on the library: they may import it, never the reverse.
APPLICATIONS = ("havic.__main__", "havic.cli", "havic.demo", "havic.benchmarks")
MAX_LINES = 500
# Modules allowed past MAX_LINES, each with the one concept that keeps it together.
LONG_MODULES: dict[str, str] = {
    "havic.data.cache": "the clip-cache format: layout, writer, reader and index, which must agree byte for byte",
    "havic.data.manifest": "the manifest schema: columns, validation with row/column messages and seeded splits",
    "havic.data.video": "PyAV decoding: probing, exact-time frame sampling, audio decoding and the writer",
    "havic.data.preprocess": "the resumable preprocessing job: workers, shards, markers and failures",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The havic modules (and tools) `name` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from havic.cli import infer` imports the submodule havic.cli.infer.
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            found.update(subs or [target])
    return {m for m in found if m == "tools" or m.startswith(("tools.", "havic"))}


GRAPH = {name: {m for m in imported_modules(name, path) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def test_nothing_under_havic_imports_tools():
    offenders = {name: sorted(m for m in imported_modules(name, path) if m == "tools" or m.startswith("tools."))
                 for name, path in MODULES.items()}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_library_never_imports_its_applications():
    def is_app(module: str) -> bool:
        return any(module == app or module.startswith(app + ".") for app in APPLICATIONS)

    offenders = {name: sorted(m for m in deps if is_app(m)) for name, deps in GRAPH.items() if not is_app(name)}
    assert not {k: v for k, v in offenders.items() if v}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles_between_modules():
    assert find_cycle(GRAPH) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    if name in LONG_MODULES:
        assert lines < 2 * MAX_LINES, f"{name}: {lines} lines even for '{LONG_MODULES[name]}'"
    else:
        assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concept or justify it in LONG_MODULES"


def test_tools_are_thin_shims_over_the_cli():
    for script in sorted((ROOT / "tools").glob("*.py")):
        text = script.read_text()
        assert len(text.splitlines()) <= 100, script
        assert f"from havic.cli.{script.stem} import main" in text, script
