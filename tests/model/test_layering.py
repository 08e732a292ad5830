"""The model layer is pure: it imports no IO, clock or randomness of its own, and nothing from the layers above
it (store, mailbox, cli, vault). Time and randomness reach it as arguments (``WriteContext``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODEL_DIR = Path(__file__).resolve().parents[2] / "crdtsync" / "model"
#: What a pure layer must not import: IO, clocks, unseeded randomness, processes.
FORBIDDEN = {"anyio", "asyncio", "trio", "socket", "sqlite3", "time", "random", "secrets", "os", "pathlib", "io",
             "shutil", "subprocess", "threading", "multiprocessing", "fsspec", "s3fs", "platformdirs"}
#: The layers above the model.
ABOVE = ("crdtsync.store", "crdtsync.mailbox", "crdtsync.cli", "crdtsync.vault", "crdtsync.imports",
         "crdtsync._vault")


def imports_of(module: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", sorted(MODEL_DIR.glob("*.py")), ids=lambda path: path.name)
def test_model_modules_import_no_io_clock_randomness_or_upper_layer(module: Path) -> None:
    imported = imports_of(module)
    assert {name.split(".")[0] for name in imported}.isdisjoint(FORBIDDEN)
    assert not [name for name in imported if name.startswith(ABOVE)]
