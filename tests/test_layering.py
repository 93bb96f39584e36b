"""The tree reads bottom-up: a static map of every vae_lab module's imports (module level and inside
functions; ``if TYPE_CHECKING:`` blocks are annotations, not imports) holds the layers to their order,
keeps Lightning and Hydra out of the parts, keeps the families off data/, and has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vae_lab"

# layers, bottom-up: a module may import its own layer and those below, never above
LAYERS = [
    {"errors", "devices", "densities", "schedules", "published", "files"},
    {"nets", "posteriors", "priors"},
    {"objectives", "regularisers", "penalties", "metrics"},
    {"data", "outputs"},
    {"models"},
    {"module", "callbacks", "checkpoints", "validation", "threads", "resolvers", "run_folder"},
    {"resume", "instantiators", "checkpoint_config"},
    {"modes", "report", "cli_errors"},
    {"train"},
    {"__main__"},
]
PLAIN_TORCH = {"nets", "posteriors", "priors", "objectives", "regularisers", "penalties", "metrics", "densities",
               "models"}  # no Lightning, no Hydra


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit of ``vae_lab.x.y``: ``x`` (a subpackage or a top-level module)."""
    return module.split(".")[1] if module.count(".") else "vae_lab"


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
               for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"{name}: in no layer of tests/test_layering.py; put it in one")


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_the_layers(module):
    if module == "vae_lab":
        return
    own = layer_of(unit(module))
    for target in GRAPH[module]:
        if target.startswith("vae_lab."):
            assert layer_of(unit(target)) <= own, f"{module} imports {target}, a layer above it"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "vae_lab" and unit(m) in PLAIN_TORCH))
def test_the_parts_and_the_families_are_plain_torch(module):
    for target in GRAPH[module]:
        assert not target.startswith(("pytorch_lightning", "lightning", "hydra", "omegaconf")), (module, target)
    if unit(module) == "models":
        assert not any(t.startswith("vae_lab.data") for t in GRAPH[module]), f"{module} imports data/"


def test_no_import_cycle():
    internal = {m: {t for t in targets if t in GRAPH} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in internal[node]:
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*path[path.index(target):], target]))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(internal):
        if module not in state:
            visit(module, [module])
