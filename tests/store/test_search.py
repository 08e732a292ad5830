"""Search on real SQLite files: words through FTS5 (unicode61), emoji and symbols as literal substrings."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from crdtsync.cli.app import app
from crdtsync.model.records import Memory
from crdtsync.store import memories, search
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

MakeVault = Callable[..., Vault]


def ids(memories: list[Memory]) -> list[str]:
    return [m.id for m in memories]


# -- symbol terms (no unicode61 token): substrings through LIKE -------------------------------------------


def test_an_emoji_alone_finds_the_memories_containing_it_and_no_others(make_vault: MakeVault) -> None:
    v = make_vault()
    tea = v.add("green tea🍵 after lunch")
    v.add("green tea after lunch")
    assert ids(v.search("🍵")) == [tea.id]


def test_an_emoji_and_a_word_must_both_match(make_vault: MakeVault) -> None:
    v = make_vault()
    both = v.add("🍵 green tea")
    v.add("🍵 black coffee")
    v.add("green tea, no cup")
    assert ids(v.search("green 🍵")) == [both.id]
    assert ids(v.search("🍵 green")) == [both.id]


def test_an_emoji_in_a_tag_or_the_category_is_found(make_vault: MakeVault) -> None:
    v = make_vault()
    tagged = v.add("likes hot drinks", tags=["🍵"])
    filed = v.add("likes cold drinks", category="🧊 cold")
    assert ids(v.search("🍵")) == [tagged.id]
    assert ids(v.search("🧊")) == [filed.id]


def test_symbol_terms_match_tag_values_not_the_tags_json(make_vault: MakeVault) -> None:
    v = make_vault()
    v.add("plain text", tags=["drinks", "tea"])
    quoted = v.add("plain text too", tags=['say "hi"'])
    assert v.search("[") == [] and v.search('",') == []
    assert ids(v.search('"')) == [quoted.id]


def test_like_wildcards_and_the_escape_character_are_matched_literally(make_vault: MakeVault) -> None:
    v = make_vault()
    percent = v.add("discount 50% off")
    under = v.add("snake_case names")
    slash = v.add("a path C:\\temp")
    v.add("plain words only")
    assert ids(v.search("%")) == [percent.id]
    assert ids(v.search("_")) == [under.id]
    assert ids(v.search("\\")) == [slash.id]
    assert v.search("%%") == [] and v.search("__") == []


def test_a_multi_character_symbol_term_is_one_substring(make_vault: MakeVault) -> None:
    v = make_vault()
    arrow = v.add("input → output ++")
    v.add("input - > output + +")
    assert ids(v.search("→")) == [arrow.id]
    assert ids(v.search("++")) == [arrow.id]


def test_a_word_holding_a_symbol_must_match_as_typed(make_vault: MakeVault) -> None:
    v = make_vault()
    cpp = v.add("writes C++ at work")
    csharp = v.add("and C# on weekends")
    grade = v.add("grade C in chemistry")
    att = v.add("phone plan with AT&T.")
    tea = v.add("green tea🍵 after lunch")
    v.add("green tea after lunch")
    assert ids(v.search("C++")) == [cpp.id]
    assert ids(v.search("c#")) == [csharp.id]
    assert set(ids(v.search("C", limit=None))) == {cpp.id, csharp.id, grade.id}  # the plain letter: FTS5 alone
    assert ids(v.search("(AT&T)")) == [att.id]  # brackets around a word are loose punctuation
    assert ids(v.search("tea🍵")) == [tea.id]


def test_loose_punctuation_keeps_a_word_an_fts_word(make_vault: MakeVault) -> None:
    v = make_vault()
    curly = v.add("Sam\u2019s birthday is in May")
    spaced = v.add("send it by e mail")
    assert ids(v.search("Sam's birthday")) == [curly.id]
    assert ids(v.search("e-mail")) == [spaced.id]
    assert ids(v.search("birthday?")) == [curly.id]
    assert search.symbol_terms("Sam's e-mail, C++! (tea🍵)") == ["C++", "tea🍵"]


def test_a_variation_selector_in_the_query_is_ignored(make_vault: MakeVault) -> None:
    v = make_vault()
    bare = v.add("I \u2764 tea")
    emoji = v.add("I \u2764\ufe0f tea")
    assert set(ids(v.search("\u2764\ufe0f", limit=None))) == {bare.id, emoji.id}


def test_an_emoji_unicode61_happens_to_index_is_found_too(make_vault: MakeVault) -> None:
    # SQLite's Unicode tables predate U+1F916, so unicode61 makes it a token: FTS5 answers, not LIKE.
    v = make_vault()
    robot = v.add("the 🤖 helper")
    v.add("the helper")
    assert ids(v.search("🤖")) == [robot.id]


def test_symbol_search_skips_deleted_memories(make_vault: MakeVault) -> None:
    v = make_vault()
    gone = v.add("🍵 deleted")
    kept = v.add("🍵 kept")
    v.delete(gone.id)
    assert ids(v.search("🍵")) == [kept.id]
    assert ids(v.search("deleted 🍵")) == []


def test_symbol_search_is_newest_first_and_honours_the_limit(make_vault: MakeVault) -> None:
    v = make_vault()
    for i in range(5):
        v.add(f"cup {i} 🍵")
    v.add("no cup")
    newest_first = [m.id for m in v.list() if "🍵" in m.content]
    assert ids(v.search("🍵", limit=None)) == newest_first
    assert ids(v.search("🍵", limit=2)) == newest_first[:2]


def test_symbol_and_word_search_honours_the_limit(make_vault: MakeVault) -> None:
    v = make_vault()
    for i in range(5):
        v.add(f"tea cup {i} 🍵")
    assert len(v.search("tea 🍵", limit=3)) == 3
    assert len(v.search("tea 🍵", limit=None)) == 5


def test_a_blank_query_finds_nothing(make_vault: MakeVault) -> None:
    v = make_vault()
    v.add("anything")
    assert v.search("") == [] and v.search("  \t ") == []


# -- words: FTS5 as before ----------------------------------------------------------------------------------


def test_the_fts5_query_of_ordinary_words_is_unchanged() -> None:
    assert search.fts_query("green tea") == '"green" "tea"*'
    assert search.fts_query('say "NEAR" AND (x') == '"say" """NEAR""" "AND" "(x"*'
    assert search.fts_query("C++") == '"C++"*'  # it holds the token "c", so it stays a word
    assert search.fts_query("tea 🍵") == '"tea"'  # the prefix belongs to the last word only
    assert search.fts_query("🍵 → \"\"") == ""


def test_word_search_matches_the_last_word_as_a_prefix_and_ranks_by_bm25(make_vault: MakeVault) -> None:
    v = make_vault()
    weak = v.add("morning coffee with a long list of other words around it")
    strong = v.add("morning morning morning coffee")
    v.add("evening coffee")
    assert ids(v.search("coffee morn")) == [strong.id, weak.id]
    assert v.search("coffee mor ning") == []


def test_the_probe_uses_the_tokenizer_of_the_index() -> None:
    assert any(f"tokenize='{search._FTS_TOKENIZE}'" in statement for statement in memories.FULL_TEXT_SCHEMA)
    assert search._is_indexed("tea") and search._is_indexed("C++") and search._is_indexed("é")
    assert not search._is_indexed("🍵") and not search._is_indexed("→") and not search._is_indexed('""')


# -- the CLI ------------------------------------------------------------------------------------------------


def test_cli_search_json_finds_a_memory_by_emoji(tmp_path: Path) -> None:
    path = Vault.init(tmp_path / "v", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(path) as v:
        tea = v.add("green tea 🍵")
        v.add("green tea")
    done = CliRunner().invoke(app, ["--vault", str(path), "search", "🍵", "--json"],
                              env={"CRDTSYNC_PASSPHRASE": PASSPHRASE})
    assert done.exit_code == 0, done.stderr
    assert [m["id"] for m in json.loads(done.stdout)] == [tea.id]


# -- property: a symbol term is a plain substring test --------------------------------------------------------

SYMBOLS = "🍵❤→+%_\\#\"'"
ALPHABET = SYMBOLS + "aB é"
texts = st.text(ALPHABET, min_size=1, max_size=12).filter(str.strip)


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    path = Vault.init(tmp_path_factory.mktemp("search") / "v", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(path) as vault:
        yield vault


@settings(max_examples=40, deadline=None)
@given(
    memories=st.lists(
        st.tuples(texts, st.none() | texts, st.lists(texts, max_size=2), st.booleans()), max_size=3
    ),
    needle=st.text(SYMBOLS, min_size=1, max_size=3),
)
def test_a_symbol_term_finds_exactly_the_memories_containing_it(
    shared_vault: Vault, memories: list[tuple[str, str | None, list[str], bool]], needle: str
) -> None:
    v = shared_vault  # memories pile up across examples; the property holds for any contents
    for content, category, tags, deleted in memories:
        added = v.add(content, category=category, tags=tags)
        if deleted:
            v.delete(added.id)
    expected = {
        m.id for m in v.list()
        if any(needle.lower() in field.lower() for field in (m.content, m.category or "", *m.tags))
    }
    assert {m.id for m in v.search(needle, limit=None)} == expected
