"""The layers of crdtsync (README "Layers"): dependencies point down only, and no module imports itself back.

- ``model``, ``crypto`` and ``protocol`` are pure: they import no IO, clock or process module and nothing from
  the layers above them; time and randomness reach them as arguments (crypto draws its keys and nonces from
  ``os.urandom``, and nothing else of ``os``).
- ``model`` and ``crypto`` do not import ``protocol``; ``mailbox`` does not import the vault, the node or the CLI.
- No import cycle anywhere in ``crdtsync/``, counting imports inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "crdtsync"
#: What a pure layer must not import: IO, clocks, unseeded randomness, processes.
FORBIDDEN = {"anyio", "asyncio", "trio", "socket", "sqlite3", "time", "random", "secrets", "os", "pathlib", "io",
             "shutil", "subprocess", "threading", "multiprocessing", "fsspec", "s3fs", "platformdirs", "filelock",
             "zeroconf", "aiortc", "ssl", "select", "selectors"}
#: The layers above the pure ones.
ABOVE = ("crdtsync.store", "crdtsync.mailbox", "crdtsync.cli", "crdtsync.vault", "crdtsync.imports",
         "crdtsync._vault", "crdtsync.node", "crdtsync.replication", "crdtsync.live", "crdtsync.transport",
         "crdtsync.discovery")
PURE = ("model", "crypto", "protocol")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(module: Path) -> set[str]:
    """Every module an import statement of ``module`` names (at any depth: in functions, under TYPE_CHECKING),
    with ``from x import y`` also naming ``x.y`` (which may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def os_attributes(module: Path) -> set[str]:
    """The attributes of ``os`` that ``module`` uses."""
    return {node.attr for node in ast.walk(ast.parse(module.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.split(".")[1:2] and
                                          name.split(".")[1] in PURE), ids=str)
def test_pure_layers_import_no_io_clock_randomness_or_upper_layer(module: str) -> None:
    path = MODULES[module]
    imported = imports_of(path)
    roots = {name.split(".")[0] for name in imported}
    if module.startswith("crdtsync.crypto"):
        assert os_attributes(path) <= {"urandom"}
        roots.discard("os")
    assert roots.isdisjoint(FORBIDDEN)
    assert not [name for name in imported if name.startswith(ABOVE)]
    if not module.startswith("crdtsync.protocol"):
        assert not [name for name in imported if name.startswith("crdtsync.protocol")]


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("crdtsync.mailbox")), ids=str)
def test_the_mailbox_does_not_reach_into_the_vault_node_or_front_ends(module: str) -> None:
    imported = imports_of(MODULES[module])
    assert not [name for name in imported if name.startswith(
        ("crdtsync.vault", "crdtsync.node", "crdtsync.cli", "crdtsync._vault"))]


def test_no_module_of_crdtsync_imports_itself_back() -> None:
    graph = {name: {target for target in imports_of(path) if target in MODULES and target not in ("crdtsync", name)}
             for name, path in MODULES.items()}
    # The package root re-exports the API (it imports the vault); every module's import of it is left out.
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
