"""Validators of the memory model: text that UTF-8 and pycrdt cannot carry, and timestamps of any year."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdtsync.errors import InvalidInputError
from crdtsync.imports import ImportProblem, read_import
from crdtsync.model.records import normalize_timestamp, utc_now_iso
from crdtsync.vault import Vault

MakeVault = Callable[..., Vault]
LONE = "\ud800"


@pytest.mark.parametrize(
    "fields",
    [
        {"content": f"a{LONE}b"},
        {"content": "ok", "category": f"c{LONE}"},
        {"content": "ok", "tags": [f"t{LONE}"]},
        {"content": "ok", "source": LONE},
        {"content": "ok", "metadata": {"k": LONE}},
        {"content": "ok", "metadata": {LONE: 1}},
    ],
)
def test_a_lone_surrogate_is_refused_with_a_clear_error_and_nothing_is_written(
    make_vault: MakeVault, fields: dict[str, Any]
) -> None:
    """pycrdt panics (a BaseException) on a str it cannot encode as UTF-8; the validators refuse it first."""
    vault = make_vault()
    kept = vault.add("already here")
    with pytest.raises(InvalidInputError) as info:
        vault.add(**fields)
    assert "lone surrogate" in info.value.message
    edit = {k: v for k, v in fields.items() if k not in ("content", "tags")} or {"content": f"x{LONE}"}
    with pytest.raises(InvalidInputError):
        vault.update(kept.id, **edit)
    assert [m.content for m in vault.list()] == ["already here"]


def test_an_import_line_with_a_lone_surrogate_is_one_problem_and_the_rest_imports(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = ['{"content": "fine"}', '{"content": "bad \\ud800"}', '{"content": "ok", "metadata": {"k": "\\udc00"}}']
    path.write_text("\n".join(lines) + "\n")
    items = list(read_import(path))
    problems = [i for i in items if isinstance(i, ImportProblem)]
    assert [p.location.rsplit(":", 1)[1] for p in problems] == ["2", "3"]
    assert len(items) == 3 and all("lone surrogate" in p.message for p in problems)


def test_an_agent_label_that_is_not_valid_text_is_refused_when_opening(make_vault: MakeVault) -> None:
    path = make_vault().path
    with pytest.raises(InvalidInputError):
        Vault.open(path, agent=f"claude{LONE}")


@pytest.mark.parametrize("year", [1, 999, 1000, 2026, 9999])
def test_timestamps_of_every_year_are_written_with_four_digits(year: int) -> None:
    text = f"{year:04d}-02-03T13:56:00.123Z"
    assert normalize_timestamp(text) == text
    assert normalize_timestamp(f"{year:04d}-02-03T13:56:00.123+00:00") == text
    assert utc_now_iso().count("-") == 2
