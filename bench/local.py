"""Local benchmark of crdtsync at scale (default 100,000 memories), with two baselines measured in the same run.

Not a test: it prints a table of measurements and of the issue's targets (value, limit, ratio, PASS/MISS) and,
with ``--json``, a JSON summary on stdout instead. Nothing here asserts a time.

The corpus is LoCoMo repeated to N memories (``bench/_corpus.py``: real text, fresh ids per repetition, a
``" (rep k)"`` suffix). Every scenario runs in its own child process (``--scenario NAME``), so that peak RSS and
warm caches of one do not pollute another; the parent builds the corpus once, runs the children in order and
reports. The scaffolding (flags, child processes, peak RSS, timers, cProfile, tables) is ``bench/_harness.py``,
shared with ``bench/mailbox.py``. Scenarios:

``floor_insert`` / ``floor_load``
    The floor: one flat pycrdt Map of plain values, ``m[id] = {content, category, tags, created, source,
    metadata}`` in one transaction (metadata as compact JSON text, as crdtsync stores it); encoded size
    ``len(doc.get_update())``; applying that update to a fresh Doc in a fresh process (the floor's "load").
``nested_insert`` (information only)
    The same records as a pycrdt Map of nested Maps (crdtsync's layout without its register keys, SQLite
    or materialization): isolates what nested Y types cost.
``loro_insert`` / ``loro_load``
    loro: a ``LoroMap`` of plain values (the same dicts as the floor), one commit; ``ExportMode.Snapshot``
    size; import of that snapshot into a fresh ``LoroDoc`` in a fresh process (loro decodes lazily, so the
    time to read every value back, ``get_deep_value()``, is shown too).
``crdtsync_import``
    ``Vault.import_path`` of the corpus (written to JSONL beforehand, untimed) into a fresh vault.
``import_required`` (information only)
    The import's work outside Python, timed alone: its record Maps written with the yrs calls crdtsync makes,
    and its materialized rows stored in SQLite (rows, FTS5 index, one fsync'd commit per import batch). A
    lower bound of ``crdtsync_import`` on the machine, whatever its Python costs.
``crdtsync_read``
    A fresh process: ``Vault.open``, ``get`` (show), ``list(limit=20)``, ``search`` (several words), checking
    that the Doc was not loaded (``not vault.doc_loaded``); then ``state_vector()`` (the first operation that
    loads the Doc) and ``len(encode_update())``.
``crdtsync_add``
    A fresh process: one cold ``add`` (loads the Doc), ``--adds`` warm durable adds (each returns after an
    fsync'd SQLite commit), then the full update and ``--edits`` single-memory edits for the next scenario.
``crdtsync_apply``
    A fresh replica vault: the defended apply path on honest updates. The full update: (a) strict reader
    ``decode_update`` + ``missing_dependencies``, (b) ``Vault.apply_update`` end to end, (c) plain
    ``pycrdt.Doc().apply_update``; then each single-edit update through both paths.

Run from the repository root::

    .venv/bin/python bench/local.py                 # N = 100,000
    .venv/bin/python bench/local.py --n 20000 --json > bench.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _harness as harness  # noqa: E402
from bench._corpus import read_jsonl, repeated  # noqa: E402
from bench._harness import Result, Stopwatch, memory_mb, reset_peak, timed  # noqa: E402

#: Words searched on the fresh vault (topical LoCoMo words, rare to common); the target uses their median.
SEARCH_WORDS = ("painting", "adoption", "guitar", "camping", "pottery", "beach", "support", "friends")
#: A word in about half of all memories: the worst case for BM25 ranking, shown for information.
WORST_WORD = "the"
#: Memory ids spread over the corpus, read with ``get`` on the fresh vault.
SAMPLE_IDS = 20
#: Repetitions of ``list(limit=20)`` after the first call.
LIST_REPEATS = 5
#: Seconds a scenario may run before it is killed and reported as failed.
DEFAULT_TIMEOUT = 900.0
#: Passphrase of the benchmark vaults (never a real one) and cheap Argon2id parameters: init is not measured.
PASSPHRASE = "crdtsync benchmark"


# -- measuring helpers -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cheap_kdf() -> Any:
    """Argon2id parameters cheap enough that vault creation does not matter (it is not measured)."""
    from crdtsync.crypto.header import MIN_ITERATIONS, MIN_MEMORY_COST_KIB, KdfParams

    return KdfParams.new(iterations=MIN_ITERATIONS, lanes=1, memory_cost=MIN_MEMORY_COST_KIB)


# -- scenarios (each runs in its own child process) ----------------------------------------------------------


def _floor_values(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(id, plain value)`` per row, as the floor and loro store them (metadata as compact JSON text)."""
    return [
        (row["id"], {
            "content": row["content"],
            "category": row["category"],
            "tags": list(row["tags"]),
            "created": row["created"],
            "source": row["source"],
            "metadata": None if row["metadata"] is None else json.dumps(
                row["metadata"], separators=(",", ":"), ensure_ascii=False, sort_keys=True),
        })
        for row in rows
    ]


def scenario_floor_insert(work: Path, params: Result) -> Result:
    """The floor: insert every record as a plain value of one flat pycrdt Map, in one transaction."""
    from pycrdt import Doc, Map

    items = _floor_values(read_jsonl(work / "corpus.jsonl"))
    out: Result = {"records": len(items)}
    base = reset_peak()
    doc: Doc[Any] = Doc()
    memories: Map[Any] = doc.get("memories", type=Map)
    with timed(out, "insert_s"), doc.transaction():
        for memory_id, value in items:
            memories[memory_id] = value
    with timed(out, "encode_s"):
        update = doc.get_update()
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["encoded_bytes"] = len(update)
    (work / "floor.bin").write_bytes(update)
    del update, doc, memories
    # The five keys alone (no metadata): size only, for reference.
    doc5: Doc[Any] = Doc()
    map5: Map[Any] = doc5.get("memories", type=Map)
    with doc5.transaction():
        for memory_id, value in items:
            map5[memory_id] = {k: v for k, v in value.items() if k != "metadata"}
    out["encoded_bytes_without_metadata"] = len(doc5.get_update())
    return out


def scenario_floor_load(work: Path, params: Result) -> Result:
    """The floor's load: apply its whole update to a fresh Doc."""
    from pycrdt import Doc, Map

    update = (work / "floor.bin").read_bytes()
    out: Result = {}
    base = reset_peak()
    with timed(out, "load_s"):
        doc: Doc[Any] = Doc()
        doc.apply_update(update)
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["records"] = len(doc.get("memories", type=Map))
    return out


def scenario_nested_insert(work: Path, params: Result) -> Result:
    """For information: the same records as nested pycrdt Maps (crdtsync's shape, nothing else)."""
    from pycrdt import Doc, Map

    items = _floor_values(read_jsonl(work / "corpus.jsonl"))
    out: Result = {"records": len(items)}
    base = reset_peak()
    doc: Doc[Any] = Doc()
    memories: Map[Any] = doc.get("memories", type=Map)
    with timed(out, "insert_s"), doc.transaction():
        for memory_id, value in items:
            memories[memory_id] = Map({k: v for k, v in value.items() if v is not None})
    with timed(out, "encode_s"):
        update = doc.get_update()
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["encoded_bytes"] = len(update)
    del doc, memories, items
    reset_peak()
    with timed(out, "load_s"):
        fresh: Doc[Any] = Doc()
        fresh.apply_update(update)
    return out


def scenario_loro_insert(work: Path, params: Result) -> Result:
    """loro: the same plain values in one LoroMap, one commit; export a snapshot."""
    import loro

    items = _floor_values(read_jsonl(work / "corpus.jsonl"))
    out: Result = {"records": len(items), "layout": "LoroMap of plain values", "version": loro.LORO_VERSION}
    base = reset_peak()
    doc = loro.LoroDoc()
    memories = doc.get_map("memories")
    with timed(out, "insert_s"):
        for memory_id, value in items:
            memories.insert(memory_id, value)
        doc.commit()
    with timed(out, "encode_s"):
        snapshot = doc.export(loro.ExportMode.Snapshot())
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["encoded_bytes"] = len(snapshot)
    (work / "loro.bin").write_bytes(snapshot)
    return out


def scenario_loro_load(work: Path, params: Result) -> Result:
    """loro's load: import the snapshot into a fresh LoroDoc; then read every value (loro decodes lazily)."""
    import loro

    snapshot = (work / "loro.bin").read_bytes()
    out: Result = {}
    base = reset_peak()
    with timed(out, "load_s"):
        doc = loro.LoroDoc()
        doc.import_(snapshot)
    probe = json.loads((work / "ids.json").read_text())[-1]
    with timed(out, "get_one_s"):
        doc.get_map("memories").get(probe)
    with timed(out, "read_all_s"):
        value = doc.get_deep_value()
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["records"] = len(value["memories"])
    return out


def _install_import_stopwatch() -> Stopwatch:
    from crdtsync.store.db import Store
    from crdtsync.store.replica import Replica

    watch = Stopwatch()
    watch.wrap(Store, "memory_level", "level lookups (Store.memory_level: dedupe + materialize)")
    watch.wrap(Replica, "local_write", "local writes (Replica.local_write)")
    watch.wrap(Replica, "_current_doc", "  catch up the Doc (Replica._current_doc)")
    watch.wrap(Store, "append_update", "  log the update (Store.append_update)")
    watch.wrap(Store, "put_rows", "  store materialized rows + FTS (Store.put_rows)")
    watch.wrap(Replica, "_maybe_compact", "compaction checks + snapshots (Replica._maybe_compact)")
    return watch


def scenario_crdtsync_import(work: Path, params: Result) -> Result:
    """Bulk import of the corpus JSONL into a fresh vault."""
    from crdtsync.vault import Vault

    path = work / "vault"
    Vault.init(path, name="bench", device_name="bench", passphrase=PASSPHRASE, kdf=cheap_kdf())
    watch = _install_import_stopwatch() if params.get("breakdown", True) else None
    out: Result = {}
    with Vault.open(path) as vault:
        base = reset_peak()
        with timed(out, "import_s"):
            report = vault.import_path(work / "corpus.jsonl")
        out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
        out.update(added=report.added, skipped=report.skipped, problems=len(report.problems))
        out["status"] = vault.status()
    out["records_per_s"] = report.added / out["import_s"] if out["import_s"] else None
    out["vault_mb"] = harness.folder_mb(path)
    if watch is not None:
        out["breakdown"] = watch.snapshot()
    return out


def scenario_import_required(work: Path, params: Result) -> Result:
    """For information: the import's work that is not Python, timed alone on what the import computes.

    ``doc_writes_s``: the import's record Maps written into a fresh Doc with the yrs calls ``MemoryDoc.add``
    makes (``insert_map_prelim``, then ``insert`` per key), one transaction per import batch, from the key/value
    dicts that ``add`` wrote (read back untimed). ``sqlite_s``: the import's materialized rows (built untimed
    with ``memory_row``) stored with ``Store.put_rows`` in a fresh vault, one fsync'd write transaction per
    import batch: row inserts, the FTS5 index, commits (``sqlite_no_fts_s``: the same rows inserted without the
    index, for comparison). Every Python step of the import (reading and checking
    the file, building records and rows, encoding values) is left out, so their sum is a lower bound of the
    import on this machine."""
    from pycrdt import Doc, Map

    from crdtsync._vault_import import IMPORT_BATCH
    from crdtsync.imports import ImportProblem, read_import
    from crdtsync.model.records import Memory
    from crdtsync.model.schema import MemoryDoc, WriteContext
    from crdtsync.store.db import Store
    from crdtsync.store.memories import memory_row
    from crdtsync.vault import Vault

    records = [r for r in read_import(work / "corpus.jsonl", format=None) if not isinstance(r, ImportProblem)]
    ctx = WriteContext(device="0" * 16, at="2026-01-01T00:00:00.000Z", new_op_id=lambda: "x")
    source_doc = MemoryDoc(Doc())
    with source_doc.doc.transaction():
        for rec in records:
            source_doc.add(rec.id, ctx, content=rec.content, category=rec.category, tags=rec.tags,
                           source=rec.source, metadata=rec.metadata, created=rec.created)
    written = [(rec.id, source_doc.memories[rec.id].to_py()) for rec in records]
    rows = [memory_row(Memory(id=rec.id, content=rec.content, category=rec.category, tags=rec.tags,
                              source=rec.source, metadata=rec.metadata, created=rec.created or ctx.at,
                              updated=rec.created or ctx.at, created_by=ctx.device, updated_by=ctx.device), [])
            for rec in records]
    del source_doc, records
    out: Result = {"records": len(rows), "batch": IMPORT_BATCH}
    doc: Doc[Any] = Doc()
    memories: Map[Any] = doc.get("memories", type=Map)
    with timed(out, "doc_writes_s"):
        for start in range(0, len(written), IMPORT_BATCH):
            with doc.transaction() as txn:
                raw_txn, raw_map = txn._txn, memories.integrated
                for memory_id, record in written[start:start + IMPORT_BATCH]:
                    record_map = raw_map.insert_map_prelim(raw_txn, memory_id)
                    for key, value in record.items():
                        record_map.insert(raw_txn, key, value)

    def store_rows(name: str, key: str, write: Callable[[Store, list[Any]], object]) -> None:
        """Time ``write`` of every import batch of ``rows`` in a fresh vault ``name``, one transaction each."""
        path = work / name
        Vault.init(path, name="bench", device_name="bench", passphrase=PASSPHRASE, kdf=cheap_kdf())
        with Vault.open(path) as vault, timed(out, key):
            for start in range(0, len(rows), IMPORT_BATCH):
                with vault.store.write():
                    write(vault.store, rows[start:start + IMPORT_BATCH])

    store_rows("required-vault", "sqlite_s", lambda store, batch: store.put_rows(batch))
    # The rows alone, without the full-text index: what the import would store if search lagged behind it.
    insert = f"INSERT INTO memories VALUES ({','.join('?' * len(rows[0]))})"
    store_rows("required-vault-no-fts", "sqlite_no_fts_s", lambda store, batch: store.conn.executemany(insert, batch))
    out["total_s"] = out["doc_writes_s"] + out["sqlite_s"]
    out["total_no_fts_s"] = out["doc_writes_s"] + out["sqlite_no_fts_s"]
    return out


def scenario_crdtsync_read(work: Path, params: Result) -> Result:
    """Reads on a freshly opened vault without the Doc, then the first Doc load and the encoded size."""
    from crdtsync.vault import Vault

    ids: list[str] = json.loads((work / "ids.json").read_text())
    out: Result = {}
    with timed(out, "open_s"):
        vault = Vault.open(work / "vault")
    try:
        get_s: list[float] = []
        for memory_id in ids:
            start = time.perf_counter()
            vault.get(memory_id)
            get_s.append(time.perf_counter() - start)
        out["get_first_s"], out["get_median_s"], out["get_max_s"] = get_s[0], statistics.median(get_s), max(get_s)
        list_s: list[float] = []
        for _ in range(1 + LIST_REPEATS):
            start = time.perf_counter()
            listed = vault.list(limit=20)
            list_s.append(time.perf_counter() - start)
        out["list_first_s"], out["list_median_s"], out["list_count"] = list_s[0], statistics.median(list_s), len(listed)
        searches: dict[str, dict[str, float]] = {}
        for word in (*SEARCH_WORDS, WORST_WORD):
            start = time.perf_counter()
            found = vault.search(word)
            searches[word] = {"s": time.perf_counter() - start, "hits": len(found)}
        out["search"] = searches
        words = [searches[w]["s"] for w in SEARCH_WORDS]
        out["search_median_s"], out["search_max_s"] = statistics.median(words), max(words)
        out["doc_is_none_after_reads"] = not vault.doc_loaded
        # A benchmark of the read path is meaningless if a read loaded the Doc.
        assert not vault.doc_loaded, "a read loaded the Doc"
        base = reset_peak()
        with timed(out, "doc_load_s"):
            vault.state_vector()
        out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
        with timed(out, "encode_s"):
            update = vault.encode_update()
        out["encoded_bytes"] = len(update)
        out["status"] = vault.status()
    finally:
        vault.close()
    return out


def scenario_crdtsync_add(work: Path, params: Result) -> Result:
    """Durable adds on the full vault, then the full update and single-edit updates for ``crdtsync_apply``."""
    from crdtsync.vault import Vault

    texts: list[str] = json.loads((work / "texts.json").read_text())
    ids: list[str] = json.loads((work / "ids.json").read_text())
    adds, edits = int(params["adds"]), int(params["edits"])
    out: Result = {}
    with Vault.open(work / "vault") as vault:
        with timed(out, "cold_add_s"):
            vault.add(texts[0] + " (bench add 0)", category="bench", tags=["bench"])
        add_s: list[float] = []
        for i in range(1, adds + 1):
            text = texts[i % len(texts)] + f" (bench add {i})"
            start = time.perf_counter()
            vault.add(text, category="bench", tags=["bench"])
            add_s.append(time.perf_counter() - start)
        out.update(adds=len(add_s), add_median_s=statistics.median(add_s), add_p95_s=percentile(add_s, 95),
                   add_max_s=max(add_s), add_min_s=min(add_s))
        full = vault.encode_update()
        (work / "full.bin").write_bytes(full)
        out["full_update_bytes"] = len(full)
        last = vault.store.last_update_id()
        small: list[str] = []
        edit_s: list[float] = []
        for i in range(edits):
            memory_id = ids[i % len(ids)]
            start = time.perf_counter()
            vault.update(memory_id, content=vault.get(memory_id).content + " (edited)")
            edit_s.append(time.perf_counter() - start)
            produced = vault.local_updates_after(last)
            last = produced[-1][0] if produced else last
            small.extend(data.hex() for _, data in produced)
        (work / "small.json").write_text(json.dumps(small))
        out.update(edits=len(edit_s), edit_median_s=statistics.median(edit_s) if edit_s else None,
                   small_update_bytes=[len(s) // 2 for s in small])
    return out


def _install_apply_stopwatch() -> Stopwatch:
    import crdtsync.store.integration as vault_module
    from crdtsync.store.db import Store
    from crdtsync.store.replica import Replica
    from crdtsync.store.worker import IntegrationWorker

    watch = Stopwatch()
    watch.wrap(vault_module, "decode_update", "strict reader (decode_update)")
    watch.wrap(vault_module, "missing_dependencies", "missing_dependencies")
    watch.wrap(vault_module, "expected_state", "expected_state")
    watch.wrap(Store, "hold", "store in the inbox (Store.hold)")
    watch.wrap(Store, "held", "read the inbox back (Store.held)")
    watch.wrap(IntegrationWorker, "__init__", "worker: spawn + load this replica's Doc")
    watch.wrap(IntegrationWorker, "apply", "worker: apply in the child, schema check + rows here")
    watch.wrap(Store, "put_rows", "  of which store rows + FTS (Store.put_rows)")
    watch.wrap(Replica, "_integrate_checked", "live apply (Doc loaded only) + log")
    watch.wrap(Replica, "_maybe_compact", "compaction (Replica._maybe_compact)")
    return watch


def _child_work_in_process(full: bytes) -> Result:
    """What the integration worker does with the full update, reproduced in this process so that it can be
    split: the apply (into an empty Doc: no observers), then its schema check of every touched record."""
    from crdtsync.errors import UpdateRejectedError
    from crdtsync.store.worker import ScratchDoc

    scratch = ScratchDoc()
    out: Result = {}
    with timed(out, "apply_s"):
        scratch.apply(full)
    problem = None
    with timed(out, "schema_check_s"):
        try:
            scratch.check()
        except UpdateRejectedError as exc:
            problem = exc.message
    out["problem"], out["changed"] = problem, len(scratch.changed)
    return out


def scenario_crdtsync_apply(work: Path, params: Result) -> Result:
    """The defended apply path on honest updates, against plain pycrdt.

    The full update first goes to a replica opened with the default deadline (what ``crdtsync sync`` does);
    if the integration worker refuses it, the whole measurement is repeated on a second replica opened with
    ``deadline=--apply-deadline`` (a public parameter of ``Vault.open``), which then also takes the edits."""
    from pycrdt import Doc

    from crdtsync.errors import UpdateRejectedError
    from crdtsync.model.ystate import decode_state_vector, missing_dependencies
    from crdtsync.model.yupdate import decode_update
    from crdtsync.store.worker import DEFAULT_DEADLINE
    from crdtsync.vault import Vault

    full = (work / "full.bin").read_bytes()
    small = [bytes.fromhex(s) for s in json.loads((work / "small.json").read_text())]
    out: Result = {"full_bytes": len(full), "default_deadline_s": DEFAULT_DEADLINE}
    watch = _install_apply_stopwatch()

    def replica(name: str, deadline: float) -> Vault:
        path = work / name
        Vault.init(path, name="bench", device_name=name, passphrase=PASSPHRASE, kdf=cheap_kdf())
        vault = Vault.open(path, deadline=deadline)
        vault.state_vector()  # load this replica's (tiny) Doc before timing
        return vault

    def apply_full(vault: Vault, prefix: str) -> bool:
        watch.reset()
        base = reset_peak()
        start = time.perf_counter()
        try:
            out[f"{prefix}_status"] = vault.apply_update(full, "bench").status
        except UpdateRejectedError as exc:
            out[f"{prefix}_status"] = f"refused {exc.code}"
        out[f"{prefix}_apply_s"] = time.perf_counter() - start
        out[f"{prefix}_rss_base_mb"], out[f"{prefix}_rss_peak_mb"] = base, memory_mb()["peak"]
        out[f"{prefix}_breakdown"] = watch.snapshot()
        return bool(out[f"{prefix}_status"] == "integrated")

    with replica("replica", DEFAULT_DEADLINE) as vault:
        state = decode_state_vector(vault.state_vector())
        with timed(out, "full_reader_s"):
            missing = missing_dependencies(decode_update(full), state)
        out["full_missing"] = bool(missing)
        integrated = apply_full(vault, "default")
    out["full_deadline_s"] = DEFAULT_DEADLINE
    for key in ("status", "apply_s", "rss_base_mb", "rss_peak_mb", "breakdown"):
        out[f"full_{key}"] = out[f"default_{key}"]
    name, deadline = "replica", DEFAULT_DEADLINE
    live: Vault | None = None
    if not integrated:
        name, deadline = "replica-long-deadline", float(params.get("apply_deadline", 600.0))
        out["full_deadline_s"] = deadline
        live = replica(name, deadline)
        apply_full(live, "long")
        for key in ("status", "apply_s", "rss_base_mb", "rss_peak_mb", "breakdown"):
            out[f"full_{key}"] = out[f"long_{key}"]
    plain: Doc[Any] = Doc()
    with timed(out, "full_plain_s"):
        plain.apply_update(full)
    del plain
    out["child_work"] = _child_work_in_process(full)
    plain = Doc()
    plain.apply_update(full)

    def apply_small(vault: Vault, update: bytes) -> tuple[float, float, float, str, dict[str, dict[str, float]]]:
        state = decode_state_vector(vault.state_vector())
        start = time.perf_counter()
        missing_dependencies(decode_update(update), state)
        reader = time.perf_counter() - start
        watch.reset()
        start = time.perf_counter()
        try:
            status = vault.apply_update(update, "bench").status
        except UpdateRejectedError as exc:
            status = f"refused {exc.code}"
        applied = time.perf_counter() - start
        breakdown = watch.snapshot()
        start = time.perf_counter()
        plain.apply_update(update)
        return reader, applied, time.perf_counter() - start, status, breakdown

    warm, cold = small[:-1], small[-1:]
    with live if live is not None else Vault.open(work / name, deadline=deadline) as vault:
        runs = [apply_small(vault, update) for update in warm]
        if runs:
            out.update(small_count=len(runs), small_statuses=[r[3] for r in runs],
                       small_reader_s=statistics.median(r[0] for r in runs),
                       small_apply_s=statistics.median(r[1] for r in runs),
                       small_plain_s=statistics.median(r[2] for r in runs),
                       small_breakdown=sorted(runs, key=lambda r: r[1])[len(runs) // 2][4])
    for update in cold:
        with Vault.open(work / name, deadline=deadline) as vault:
            _, applied, plain_s, status, breakdown = apply_small(vault, update)
            out.update(cold_apply_s=applied, cold_plain_s=plain_s, cold_status=status, cold_breakdown=breakdown)
            out["status"] = vault.status()
    out["worker_peak_mb"] = harness.children_peak_mb()  # the workers are joined when their vault closes
    return out


SCENARIOS: dict[str, Callable[[Path, Result], Result]] = {
    "floor_insert": scenario_floor_insert,
    "floor_load": scenario_floor_load,
    "nested_insert": scenario_nested_insert,
    "loro_insert": scenario_loro_insert,
    "loro_load": scenario_loro_load,
    "crdtsync_import": scenario_crdtsync_import,
    "import_required": scenario_import_required,
    "crdtsync_read": scenario_crdtsync_read,
    "crdtsync_add": scenario_crdtsync_add,
    "crdtsync_apply": scenario_crdtsync_apply,
}


# -- the parent: corpus, children, report ----------------------------------------------------------------------


def prepare(work: Path, n: int) -> Result:
    """Build the corpus JSONL, the sample ids and the texts of the adds (none of it timed as a result)."""

    def samples(base: list[dict[str, Any]]) -> None:
        step = max(1, n // SAMPLE_IDS)
        ids = [row["id"] for i, row in enumerate(repeated(base, n)) if i % step == 0][:SAMPLE_IDS]
        (work / "ids.json").write_text(json.dumps(ids))
        (work / "texts.json").write_text(json.dumps([row["content"] for row in base[:1000]]))

    return harness.prepare_corpus(work, n, samples)


def _get(results: Result, scenario: str, key: str) -> Any:
    """``results[scenario][key]``, or None when the scenario is missing or failed."""
    value = results.get(scenario, {})
    return None if "error" in value else value.get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    return a / b if a is not None and b else None


def targets(r: Result) -> list[Result]:
    """The issue's targets as rows: what, measured, limit (as text), ratio (or None), PASS/MISS."""
    rows: list[Result] = []

    def relative(what: str, value: float | None, floor: float | None, factor: float, unit: str) -> None:
        ratio = _ratio(value, floor)
        rows.append({"target": what, "value": value, "unit": unit, "limit": f"<= {factor:g}x floor",
                     "reference": floor, "ratio": ratio,
                     "verdict": None if ratio is None else ("PASS" if ratio <= factor else "MISS")})

    def absolute(what: str, value: float | None, limit: float, unit: str) -> None:
        rows.append({"target": what, "value": value, "unit": unit, "limit": f"< {limit:g} {unit}",
                     "reference": limit, "ratio": _ratio(value, limit),
                     "verdict": None if value is None else ("PASS" if value < limit else "MISS")})

    relative("bulk import vs floor insert", _get(r, "crdtsync_import", "import_s"),
             _get(r, "floor_insert", "insert_s"), 3, "s")
    info = _get(r, "import_required", "total_s")
    floor = _get(r, "floor_insert", "insert_s")
    rows.append({"target": "(information) the import's yrs writes + SQLite alone vs floor insert", "value": info,
                 "unit": "s", "limit": "<= 3x floor", "reference": floor, "ratio": _ratio(info, floor),
                 "verdict": None})
    relative("Doc load vs floor update apply", _get(r, "crdtsync_read", "doc_load_s"),
             _get(r, "floor_load", "load_s"), 3, "s")
    relative("encoded size vs floor", _get(r, "crdtsync_read", "encoded_bytes"),
             _get(r, "floor_insert", "encoded_bytes"), 1.3, "B")
    crdt_growth = _growth(r, "crdtsync_import")
    relative("peak RSS growth of the import vs floor insert", crdt_growth, _growth(r, "floor_insert"), 2, "MiB")
    ms = 1000.0

    def in_ms(scenario: str, key: str) -> float | None:
        value = _get(r, scenario, key)
        return None if value is None else value * ms

    absolute("one durable add, median", in_ms("crdtsync_add", "add_median_s"), 5, "ms")
    absolute("show (get) on a fresh vault, first call", in_ms("crdtsync_read", "get_first_s"), 50, "ms")
    absolute("search, median of words", in_ms("crdtsync_read", "search_median_s"), 50, "ms")
    absolute("list of 20 on a fresh vault, first call", in_ms("crdtsync_read", "list_first_s"), 50, "ms")
    return rows


def _growth(r: Result, scenario: str) -> float | None:
    """Peak RSS minus the RSS at the start of the measured step, in MiB."""
    peak, base = _get(r, scenario, "rss_peak_mb"), _get(r, scenario, "rss_base_mb")
    return None if peak is None or base is None else peak - base


def _fmt(value: Any, unit: str = "") -> str:
    """A value for the tables: seconds as s or ms, bytes as MiB, counts with separators."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value >= 0.1 else f"{value * 1000:.2f} ms"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "B":
        return f"{value / 2**20:.1f} MiB"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def report_tables(r: Result, console: Any) -> None:
    """Print the results as rich tables on ``console``."""
    from rich.table import Table

    n = r["params"]["n"]
    m = r["machine"]
    reps = n / r["corpus"]["base_records"]
    console.print(f"[bold]crdtsync local benchmark[/bold]: {n:,} memories (LoCoMo x{reps:.1f}),"
                  f" {m['date']}, {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, pycrdt {m.get('pycrdt')},"
                  f" loro {m.get('loro')}, SQLite {m['sqlite']}, crdtsync {m['commit']}")
    errors = {k: v["error"] for k, v in r["scenarios"].items() if isinstance(v, dict) and "error" in v}
    for name, error in errors.items():
        console.print(f"[red]scenario {name} failed:[/red] {error}")
    s = r["scenarios"]

    t = Table(title="Same records, three stores")
    for col in ("", "crdtsync (Vault)", "floor: flat pycrdt Map", "loro: LoroMap of values", "pycrdt nested Maps"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("insert / import", _fmt(_get(s, "crdtsync_import", "import_s"), "s"),
              _fmt(_get(s, "floor_insert", "insert_s"), "s"), _fmt(_get(s, "loro_insert", "insert_s"), "s"),
              _fmt(_get(s, "nested_insert", "insert_s"), "s"))
    t.add_row("records/s", *(_fmt(_rate(s, name, key)) for name, key in (
        ("crdtsync_import", "import_s"), ("floor_insert", "insert_s"), ("loro_insert", "insert_s"),
        ("nested_insert", "insert_s"))))
    t.add_row("encoded size", _fmt(_get(s, "crdtsync_read", "encoded_bytes"), "B"),
              _fmt(_get(s, "floor_insert", "encoded_bytes"), "B"), _fmt(_get(s, "loro_insert", "encoded_bytes"), "B"),
              _fmt(_get(s, "nested_insert", "encoded_bytes"), "B"))
    t.add_row("load (fresh process)", _fmt(_get(s, "crdtsync_read", "doc_load_s"), "s"),
              _fmt(_get(s, "floor_load", "load_s"), "s"), _fmt(_get(s, "loro_load", "load_s"), "s")
              + f" (then one get {_fmt(_get(s, 'loro_load', 'get_one_s'), 's')};"
              f" get_deep_value {_fmt(_get(s, 'loro_load', 'read_all_s'), 's')})",
              _fmt(_get(s, "nested_insert", "load_s"), "s") + " (warm process)")
    t.add_row("peak RSS of insert/import", *(_fmt(_get(s, k, "rss_peak_mb"), "MiB") for k in (
        "crdtsync_import", "floor_insert", "loro_insert", "nested_insert")))
    t.add_row("  growth over the start", *(_fmt(_growth(s, k), "MiB") for k in (
        "crdtsync_import", "floor_insert", "loro_insert", "nested_insert")))
    t.add_row("peak RSS of load", _fmt(_get(s, "crdtsync_read", "rss_peak_mb"), "MiB"),
              _fmt(_get(s, "floor_load", "rss_peak_mb"), "MiB"), _fmt(_get(s, "loro_load", "rss_peak_mb"), "MiB"), "-")
    console.print(t)

    console.print(harness.targets_table(r["targets"], _fmt))

    read = s.get("crdtsync_read", {})
    if "error" not in read and read:
        t = Table(title="Reads on a freshly opened vault (no Doc)")
        t.add_column("operation")
        t.add_column("time", justify="right")
        t.add_column("note")
        t.add_row("Vault.open", _fmt(read["open_s"], "s"), "")
        t.add_row("get (show)", _fmt(read["get_first_s"], "s"),
                  f"first; median {_fmt(read['get_median_s'], 's')}, max {_fmt(read['get_max_s'], 's')}"
                  f" of {SAMPLE_IDS}")
        t.add_row("list(limit=20)", _fmt(read["list_first_s"], "s"),
                  f"first; median {_fmt(read['list_median_s'], 's')} of {LIST_REPEATS + 1}")
        for word, hit in read["search"].items():
            note = "worst case, not in the median" if word == WORST_WORD else ""
            t.add_row(f"search {word!r} ({hit['hits']} shown)", _fmt(hit["s"], "s"), note)
        t.add_row("search median / max", f"{_fmt(read['search_median_s'], 's')} / {_fmt(read['search_max_s'], 's')}",
                  f"words {', '.join(SEARCH_WORDS)}")
        t.add_row("Doc not loaded after the reads", str(read["doc_is_none_after_reads"]), "")
        t.add_row("then state_vector() (loads the Doc)", _fmt(read["doc_load_s"], "s"),
                  f"loro snapshot import: {_fmt(_get(s, 'loro_load', 'load_s'), 's')}")
        console.print(t)

    add = s.get("crdtsync_add", {})
    if "error" not in add and add:
        t = Table(title="Durable writes on the full vault")
        t.add_column("operation")
        t.add_column("time", justify="right")
        t.add_row("first add after open (loads the Doc)", _fmt(add["cold_add_s"], "s"))
        t.add_row(f"add, median of {add['adds']}", _fmt(add["add_median_s"], "s"))
        t.add_row("add, p95 / min / max", f"{_fmt(add['add_p95_s'], 's')} / {_fmt(add['add_min_s'], 's')} / "
                  f"{_fmt(add['add_max_s'], 's')}")
        t.add_row(f"edit (update content), median of {add['edits']}", _fmt(add["edit_median_s"], "s"))
        console.print(t)

    app = s.get("crdtsync_apply", {})
    if "error" not in app and app:
        t = Table(title="Defended apply path on honest updates (fresh replica)")
        t.add_column("")
        t.add_column(f"full update ({app['full_bytes'] / 2**20:.1f} MiB)", justify="right")
        t.add_column("single edit, warm (median)", justify="right")
        t.add_column("single edit, first in a fresh Vault", justify="right")
        t.add_row("(a) decode_update + missing_dependencies", _fmt(app["full_reader_s"], "s"),
                  _fmt(app.get("small_reader_s"), "s"), "")
        if app["default_status"] != "integrated":
            t.add_row(f"(b0) Vault.apply_update, default {app['default_deadline_s']:g} s deadline",
                      f"{app['default_status']} after {_fmt(app['default_apply_s'], 's')}", "", "")
        t.add_row(f"(b) Vault.apply_update end to end (deadline {app['full_deadline_s']:g} s)",
                  _fmt(app["full_apply_s"], "s"), _fmt(app.get("small_apply_s"), "s"),
                  _fmt(app.get("cold_apply_s"), "s"))
        t.add_row("(c) plain pycrdt Doc.apply_update", _fmt(app["full_plain_s"], "s"),
                  _fmt(app.get("small_plain_s"), "s"), _fmt(app.get("cold_plain_s"), "s"))
        ratios = (_ratio(app["full_apply_s"], app["full_plain_s"]),
                  _ratio(app.get("small_apply_s"), app.get("small_plain_s")),
                  _ratio(app.get("cold_apply_s"), app.get("cold_plain_s")))
        t.add_row("ratio (b)/(c)", *(f"{ratio:.0f}x" if ratio is not None else "-" for ratio in ratios))
        t.add_row("status of (b)", app["full_status"], ",".join(sorted(set(app.get("small_statuses", [])))),
                  app.get("cold_status", "-"))
        small_bd, cold_bd = app.get("small_breakdown", {}), app.get("cold_breakdown", {})
        for label, part in app["full_breakdown"].items():
            cells = [f"{_fmt(bd.get(label, {}).get('s'), 's')} ({bd.get(label, {}).get('calls', 0):.0f})"
                     for bd in (small_bd, cold_bd)]
            t.add_row(f"  {label}", f"{_fmt(part['s'], 's')} ({part['calls']:.0f})", *cells)
        child = app.get("child_work", {})
        if child:
            t.add_row("  the worker's work redone in-process: apply (empty Doc, no observers)",
                      _fmt(child["apply_s"], "s"), "", "")
            t.add_row("  the worker's work redone in-process: schema check of touched records",
                      _fmt(child["schema_check_s"], "s") + f" ({child['changed']:,} records)", "", "")
        t.add_row("peak RSS: parent during the full apply / largest integration worker",
                  f"{app['full_rss_peak_mb']:.0f} / {app['worker_peak_mb']:.0f} MiB", "", "")
        console.print(t)

    imp = s.get("crdtsync_import", {})
    if "error" not in imp and imp.get("breakdown"):
        console.print(harness.breakdown_table("Where the import's time goes (wrapped calls)", imp["breakdown"],
                                              lambda seconds: _fmt(seconds, "s"),
                                              total=("total import", imp["import_s"])))
    need = s.get("import_required", {})
    if "error" not in need and need:
        floor = _get(s, "floor_insert", "insert_s")
        console.print(f"the import's work outside Python, timed alone (a lower bound of the import): yrs writes "
                      f"{_fmt(need['doc_writes_s'], 's')} + SQLite rows, FTS5 and commits {_fmt(need['sqlite_s'], 's')}"
                      f" = {_fmt(need['total_s'], 's')}, {_fmt(_ratio(need['total_s'], floor))}x the floor's insert"
                      f" (the target allows 3x); without the full-text index {_fmt(need['total_no_fts_s'], 's')},"
                      f" {_fmt(_ratio(need['total_no_fts_s'], floor))}x")
    console.print(f"corpus: {r['corpus']['records']:,} records, JSONL {r['corpus']['jsonl_mb']:.1f} MiB, built in "
                  f"{r['corpus']['seconds']:.1f} s (untimed); vault folder after import "
                  f"{_fmt(_get(s, 'crdtsync_import', 'vault_mb'), 'MiB')}; whole run {r['wall_s']:.0f} s; load average"
                  f" (1/5/15 min) at start {harness.format_loads(r, 'start')}, at end {harness.format_loads(r, 'end')}"
                  f" on {r['machine']['cpus']} CPUs")


def _rate(s: Result, scenario: str, key: str) -> float | None:
    """Records per second of a scenario's timed step."""
    seconds, records = _get(s, scenario, key), _get(s, scenario, "records") or _get(s, scenario, "added")
    return None if not seconds or records is None else round(records / seconds)


ORDER = ("floor_insert", "floor_load", "nested_insert", "loro_insert", "loro_load", "crdtsync_import",
         "import_required",
         "crdtsync_read", "crdtsync_add", "crdtsync_apply")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = harness.make_parser(__doc__, SCENARIOS, default_timeout=DEFAULT_TIMEOUT,
                                 skip_help="comma-separated scenarios to leave out (e.g. nested_insert)")
    parser.add_argument("--adds", type=int, default=200, help="durable adds timed on the full vault")
    parser.add_argument("--edits", type=int, default=6,
                        help="single-edit updates through the apply path (the last one on a freshly opened vault)")
    parser.add_argument("--apply-deadline", type=float, default=600.0,
                        help="worker deadline of the second replica when the default one refuses the full update")
    parser.add_argument("--no-breakdown", action="store_true", help="do not wrap crdtsync calls to time parts")
    args = parser.parse_args(argv)
    profiled = harness.names(args.profile_scenarios)

    if args.scenario:
        harness.run_scenario_here(SCENARIOS, args.scenario, args.workdir, json.loads(args.params),
                                  profile=args.scenario in profiled)
        return 0

    console = harness.make_console(args.json, 132)
    skipped = harness.names(args.skip)
    unknown = (skipped | profiled) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    script = Path(__file__).resolve()
    params: Result = {"n": args.n, "adds": args.adds, "edits": args.edits, "breakdown": not args.no_breakdown,
                      "apply_deadline": args.apply_deadline}
    results: Result = {"params": params, "machine": harness.machine(("pycrdt", "loro")), "scenarios": {},
                       "load_average": {}}
    with harness.work_folder("crdtsync-bench-", args.tmp, args.keep, console) as work:
        started = time.perf_counter()
        harness.record_load(results, "start")
        console.print(f"building the corpus ({args.n:,} memories) in {work} ...")
        results["corpus"] = prepare(work, args.n)
        for name in ORDER:
            if name in skipped:
                continue
            console.print(f"running {name} ...")
            results["scenarios"][name] = harness.run_child(script, name, work, params, timeout=args.timeout,
                                                           profile=name in profiled)
            if "error" in results["scenarios"][name]:
                console.print(f"[red]{name} failed[/red]: {results['scenarios'][name]['error']}")
        results["targets"] = targets(results["scenarios"])
        results["wall_s"] = time.perf_counter() - started
        harness.record_load(results, "end")
        report_tables(results, console)
        harness.print_profiles(console, results["scenarios"].items())
        if args.json:
            print(json.dumps(results, indent=2, default=str))
    return 1 if any("error" in v for v in results["scenarios"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
