"""The package's shape: folders are layers, layers import downward only, modules stay small.

These are the rules of ``docs/architecture.md``, measured from the source with :mod:`ast` (imports at any
depth, function-level ones included), so that a change that breaks them fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "opto_cube"

# lowest first: a module may import only from its own layer or a lower one
LAYERS: tuple[tuple[str, ...], ...] = (
    ("schema", "errors", "lazy"),
    ("binning", "io", "synth"),
    ("store",),
    ("analysis",),
    ("figures",),
    ("jobs",),
    ("accessor",),
    ("cli",),
)
MAX_LINES = 700
MAX_TOP_LEVEL_MODULES = 8


def _layer_of(unit: str) -> int:
    for rank, names in enumerate(LAYERS):
        if unit in names:
            return rank
    raise AssertionError(f"opto_cube.{unit} belongs to no layer: add it to LAYERS and docs/architecture.md")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(("opto_cube", *rel.parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every opto_cube import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] == "opto_cube":
                found.append((module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "opto_cube"]
    return found


def _unit(module: str) -> str | None:
    """The layer unit of ``opto_cube.x.y``: ``x`` (a subpackage or a top-level module); None for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = _modules()


def test_at_most_eight_top_level_modules_and_three_subpackages() -> None:
    top = [p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    subpackages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(p.name for p in top)
    assert len(subpackages) >= 3, subpackages


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name: str) -> None:
    n_lines = len(MODULES[name].read_text().splitlines())
    assert n_lines <= MAX_LINES, f"{MODULES[name]} has {n_lines} lines (at most {MAX_LINES}: split it by idea)"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m != "opto_cube"))
def test_imports_go_downward(name: str) -> None:
    here = _layer_of(_unit(name) or "")
    for module, names, line in _imports(name, MODULES[name]):
        units = [_unit(module)] if _unit(module) else [n for n in names if n in _all_units()]
        for unit in units:
            assert _layer_of(unit) <= here, f"{MODULES[name]}:{line} imports {module} ({unit}), a higher layer"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_crosses_a_module(name: str) -> None:
    for module, names, line in _imports(name, MODULES[name]):
        if module == name:
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{MODULES[name]}:{line} imports private {private} from {module}"


def _all_units() -> set[str]:
    return {u for names in LAYERS for u in names}


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for module, names, _ in _imports(name, path):
            for target in [f"{module}.{n}" for n in names] + [module]:
                if target in MODULES and target != name:
                    deps.add(target)
                    break
        graph[name] = deps - {"opto_cube"}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt) :], nxt]))
            if not state.get(nxt):
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node, [node])
