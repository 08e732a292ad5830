"""Turning search text into SQL for the materialized memories: FTS5 words and literal symbol terms.

Words that SQLite's unicode61 tokenizer indexes go to the FTS5 index ``memories_fts``; words it does not
(emoji, symbols, punctuation) become ``LIKE`` substring tests over content, category and tags, and so do
words that mix both (``C++``, ``tea🍵``), which must match as typed as well as through FTS5. Used by
:meth:`crdtsync.store.memories.MaterializedMemories.search` (a method of ``Store``).
"""

from __future__ import annotations

import functools
import sqlite3
import threading

#: The ``tokenize=`` of ``memories_fts`` in :data:`crdtsync.store.db._SCHEMA` (a test checks they agree).
_FTS_TOKENIZE = "unicode61"
_PROBE_LOCK = threading.Lock()


@functools.cache
def _tokenizer_probe() -> sqlite3.Connection:
    """A private in-memory database holding an empty FTS5 table tokenized like ``memories_fts`` and its
    ``fts5vocab`` table; :func:`_is_indexed` uses it under ``_PROBE_LOCK``."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute(f"CREATE VIRTUAL TABLE probe USING fts5(x, tokenize='{_FTS_TOKENIZE}')")
    conn.execute("CREATE VIRTUAL TABLE probe_terms USING fts5vocab(probe, 'instance')")
    return conn


@functools.lru_cache(maxsize=4096)
def _is_indexed(word: str) -> bool:
    """Whether unicode61 finds at least one token in ``word``, so that FTS5 can match it.

    Asked of SQLite itself (insert ``word`` into the probe table, count its tokens, roll back; about 20 us,
    cached): unicode61 classifies characters with SQLite's own Unicode tables, not Python's. Letters, digits
    and private-use characters are token characters, but so are code points SQLite's tables do not know,
    which makes emoji newer than those tables (for example U+1F916, U+1F3FD) tokens while older ones
    (U+1F375, U+2764, U+2192) are separators."""
    with _PROBE_LOCK:
        conn = _tokenizer_probe()
        conn.execute("BEGIN")
        try:
            conn.execute("INSERT INTO probe (x) VALUES (?)", (word,))
            (count,) = conn.execute("SELECT count(*) FROM probe_terms").fetchone()
        finally:
            conn.execute("ROLLBACK")
    return bool(count)


def fts_query(text: str) -> str:
    """Turn free text into an FTS5 query over its words that unicode61 indexes (:func:`_is_indexed`): every
    such word must match (quoted, so FTS5 operators in the text are plain words); the last word of ``text``
    also matches as a prefix when it is one of them. Returns ``""`` when the text has no such word. The other
    words (emoji, symbols, punctuation) are left to :func:`symbol_terms`."""
    words = text.split()
    quoted = ['"' + w.replace('"', '""') + '"' for w in words if _is_indexed(w)]
    if not quoted:
        return ""
    if _is_indexed(words[-1]):
        quoted[-1] += "*"
    return " ".join(quoted)


#: Emoji variation selectors (text and emoji presentation), dropped from symbol terms.
_VARIATION_SELECTORS = str.maketrans("", "", "\ufe0e\ufe0f")

#: One symbol term found in content, category, a conflict candidate of those, or a tag; bind the ``LIKE``
#: pattern once per ``?``.
CONTAINS = (
    "(m.content LIKE ? ESCAPE '\\' OR m.category LIKE ? ESCAPE '\\' OR m.alternatives LIKE ? ESCAPE '\\' OR "
    "EXISTS (SELECT 1 FROM json_each(m.tags) WHERE json_each.value LIKE ? ESCAPE '\\'))"
)


#: Separators that do not make a word literal (:func:`symbol_terms`): sentence punctuation, quotes, brackets,
#: apostrophes and hyphens, which people type loosely ("Sam's" should find "Sam\u2019s", "e-mail" "e mail").
_LOOSE_CHARS = ".,;:!?\"'()[]{}<>\u2018\u2019\u201c\u201d-\u2010\u2013\u2014"
_LOOSE = frozenset(_LOOSE_CHARS)


def symbol_terms(text: str) -> list[str]:
    """The literal terms of ``text``, once each, in order, without variation selectors (so ``"❤️"`` also finds a
    bare ``"❤"``):

    - words in which unicode61 finds no token (emoji, symbols, punctuation: ``"🍵"``, ``"→"``, ``"++"``);
    - words it tokenizes but that also hold a symbol it drops (``"C++"``, ``"C#"``, ``"AT&T"``, ``"tea🍵"``),
      without their loose punctuation at either end (:data:`_LOOSE`): FTS5 alone would find every ``"C"``.
      Loose punctuation inside a word keeps it a plain FTS5 word."""
    terms = []
    for word in text.split():
        if not _is_indexed(word):
            terms.append(word.translate(_VARIATION_SELECTORS))
            continue
        core = word.strip(_LOOSE_CHARS).translate(_VARIATION_SELECTORS)
        if any(ch not in _LOOSE and not _is_indexed(ch) for ch in core):
            terms.append(core)
    return list(dict.fromkeys(t for t in terms if t))


def like_pattern(term: str) -> str:
    """``%term%`` for ``LIKE ... ESCAPE '\\'``: ``%``, ``_`` and ``\\`` in ``term`` match only themselves."""
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
