"""Mailbox benchmark: crdtsync's sync through a folder and through S3 (moto) at scale, against two baselines.

Not a test: it prints tables of measurements and of the issue's targets (value, limit, ratio, PASS/MISS) and,
with ``--json``, a JSON summary on stdout instead. Nothing here asserts a time.

Stores: the folder backend (``file://`` in the work folder) and moto's S3 server, which the parent process
starts on 127.0.0.1 (``ThreadedMotoServer``) and points the usual AWS variables at; children inherit them.
The corpus is LoCoMo repeated to N memories (``bench/_corpus.py``). Device A's vault is imported once (untimed,
its own child) and copied for each store. Every scenario below runs in its own child process (``--scenario``),
per store, in this order:

``push``
    A: ``add_relay`` + ``sync()``, the first push of the whole vault (timed, with where the time goes).
``join``
    B: ``Vault.join(url)``: finds the header, Argon2id, pulls everything, integrates, pushes its registration.
    Bytes and object operations are the sum of the stats of every store the join opened (``open_store`` is
    wrapped); the ``SyncReport`` objects of its two syncs (``sync_relays`` is wrapped) are kept too. If the
    integration worker refuses the update under the default deadline, the join is repeated in a new folder
    with ``Vault.open(deadline=--apply-deadline)`` and both are reported.
    What the join left on disk is recorded too: ``vault.db`` and its WAL, each table's bytes (``dbstat``) and
    the bytes of the entries kept as received.
``edit``
    A and B open in one process; A pulls B's registration (untimed). Then ``--edit-rounds`` rounds of: A edits
    one memory's content (untimed), A ``sync(pull=False)`` and B ``sync(push=False)`` (each timed, bytes and
    operations from the store stats). Round 1 uses freshly opened Vault objects (what a ``crdtsync sync``
    invocation pays: Doc load, integration worker spawn); later rounds reuse them (warm).
``floor_push`` / ``floor_pull``
    The floor: A's whole Doc (``encode_update()``) as one encrypted file: split with ``split_body``, each
    chunk sealed with crdtsync's envelope under A's keys, the envelopes in one msgpack array, one put. The other
    side: get, open the envelopes, join the chunks, apply to a fresh ``pycrdt.Doc``. For "one edit" the floor
    re-uploads the whole file (after one edit on A) and the other side applies it to the Doc it has. For
    information the pull side also times storing the N rows in a fresh vault database (``Store.put_rows`` of
    rows built untimed): the floor plus that is a lower bound of any cold sync that keeps SQLite as the state of
    record.
``naive_push`` / ``naive_pull``
    One encrypted object per memory: its JSON record ``{content, category, tags, created, source,
    metadata}`` sealed in one envelope, put as ``m/<id>``. Cold sync: list + one get per memory + open + parse.
    One edit: one put; list + one get on the other side. ``--naive-n`` (S3) / ``--naive-n-folder`` measure it
    on fewer memories; the figures at N are then extrapolated linearly (and labelled so).
``bridge``
    A bridged chain: B (joined through relay R1 by ``join``) adds relay R2 and syncs, carrying A's entries into R2
    byte for byte (timed like A's first push); then C joins through R2 alone (measured like ``join``), and C's
    memory counts are checked against A's. Shown beside A's first push and B's join, with ratios.
``heal``
    A syncs (untimed), then 10% of the objects under the vault's ``a/`` folder in R1 are deleted through the
    store (picked with ``random.Random(seed)`` over keys ordered by author role and name), and A's next sync
    (a fresh ``Vault``) puts them back: time, bytes, operations, objects put and ``SyncReport.healed``, and
    whether each lost key is there again; ten rounds, seeds 10 to 19 (the first is the headline). Then D joins
    through R1.

On S3 the API requests the client made (``aiobotocore``'s ``_make_api_call`` wrapped in the child) are
counted by type as well: a store "get" is up to two HEADs + a GET (``fs.size`` and s3fs's own size check).

The scaffolding (flags, child processes, peak RSS, timers, cProfile, tables) is ``bench/_harness.py``, shared
with ``bench/local.py``.

Run from the repository root::

    .venv/bin/python bench/mailbox.py                      # N = 100,000, folder and S3
    .venv/bin/python bench/mailbox.py --n 10000 --stores folder --json > mailbox.json
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
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
from bench._harness import Result, Stopwatch, memory_mb, reset_peak, timed, wrap_any  # noqa: E402

#: Passphrase of the benchmark vault (never a real one). The vault uses crdtsync's default Argon2id parameters,
#: so the join pays what a real one does.
PASSPHRASE = "crdtsync benchmark"
#: The moto bucket (created by the parent).
BUCKET = "crdtsync-bench"
#: Seconds a scenario may run before it is killed and reported as failed.
DEFAULT_TIMEOUT = 1800.0
#: Memories of the naive layout on S3 by default (100k sequential puts to moto take about 12 minutes).
DEFAULT_NAIVE_N_S3 = 10_000
#: S3 returns at most this many keys per ListObjectsV2 request.
S3_LIST_PAGE = 1000
#: Targets of the issue.
EDIT_MAX_BYTES = 2 * 1024
EDIT_MAX_OPERATIONS = 5
COLD_MAX_RATIO = 2.0
STORES = ("folder", "s3")
ORDER = ("push", "join", "edit", "floor_push", "floor_pull", "naive_push", "naive_pull", "bridge", "heal")
#: Share of the objects under the vault's ``a/`` folder the ``heal`` scenario deletes from the relay, and the seed
#: of the choice.
HEAL_SHARE = 0.10
HEAL_SEED = 10
#: Rounds of loss and heal, one seed each from HEAL_SEED on (the first is the headline figure).
HEAL_ROUNDS = 10


# -- measuring helpers (child side) ---------------------------------------------------------------------------


class ApiCounter:
    """Counts the S3 API requests this process makes, by operation name, by wrapping aiobotocore's
    ``AioBaseClient._make_api_call`` (s3fs goes through it). Retries inside botocore are not counted."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def install(self) -> None:
        """Wrap the client method (once per process)."""
        from aiobotocore.client import AioBaseClient

        original = AioBaseClient._make_api_call
        counts = self.counts

        async def counted(client: Any, operation_name: str, api_params: Any) -> Any:
            counts[operation_name] = counts.get(operation_name, 0) + 1
            return await original(client, operation_name, api_params)

        AioBaseClient._make_api_call = counted

    def snapshot(self) -> dict[str, int]:
        """The counts so far."""
        return dict(self.counts)

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """The requests made since ``before`` (a :meth:`snapshot`), zero counts left out."""
        return {k: v - before.get(k, 0) for k, v in self.counts.items() if v - before.get(k, 0)}


class StoreTap:
    """Keeps every :class:`~crdtsync.mailbox.backend.BlobStore` that ``open_store`` returns in this process
    (crdtsync imports ``open_store`` at call time, so wrapping the module attribute sees them all), and every
    ``SyncReport`` that ``sync_relays`` returns."""

    def __init__(self) -> None:
        self.stores: list[Any] = []
        self.reports: list[Result] = []

    def install(self) -> None:
        """Wrap ``open_store`` and ``sync_relays``."""
        import crdtsync.mailbox.backend as backend
        import crdtsync.mailbox.sync as sync_module

        open_original = backend.open_store
        sync_original = sync_module.sync_relays

        def tapped_open(url: str, **options: Any) -> Any:
            store = open_original(url, **options)
            self.stores.append(store)
            return store

        def tapped_sync(*args: Any, **kwargs: Any) -> Any:
            reports = sync_original(*args, **kwargs)
            self.reports.extend(report.to_json() for report in reports)
            return reports

        backend.open_store = tapped_open
        sync_module.sync_relays = tapped_sync

    def totals(self) -> dict[str, int]:
        """The summed stats of every store opened so far."""
        return sum_stats(self.stores)


def stats_of(store: Any) -> dict[str, int]:
    """A store's counters as a dict, with ``operations``."""
    s = store.stats
    return {"gets": s.gets, "puts": s.puts, "lists": s.lists, "deletes": s.deletes, "bytes_up": s.bytes_up,
            "bytes_down": s.bytes_down, "operations": s.operations}


def sum_stats(stores: list[Any]) -> dict[str, int]:
    """The summed counters of ``stores``."""
    total = dict.fromkeys(("gets", "puts", "lists", "deletes", "bytes_up", "bytes_down", "operations"), 0)
    for store in stores:
        for key, value in stats_of(store).items():
            total[key] += value
    return total


def diff_stats(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """``after - before`` per counter."""
    return {k: after[k] - before.get(k, 0) for k in after}


def api_counter(params: Result) -> ApiCounter | None:
    """An installed :class:`ApiCounter` when the scenario runs against S3, else None."""
    if params["store"] != "s3":
        return None
    counter = ApiCounter()
    counter.install()
    return counter


def store_url(params: Result, what: str) -> str:
    """The URL of the mailbox (``what`` = ``mailbox``) or of a baseline's area (``floor``, ``naive``)."""
    if params["store"] == "s3":
        return f"s3://{BUCKET}/{what}"
    return (Path(params["work"]) / "folder-store" / what).as_uri()


def store_dir(params: Result) -> Path:
    """The folder of this store's devices (A, B) in the work folder."""
    return Path(params["work"]) / params["store"]


def record_json(row: dict[str, Any]) -> bytes:
    """The naive layout's plaintext of one memory: its JSON record."""
    record = {k: row[k] for k in ("content", "category", "tags", "created", "source", "metadata")}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


# -- scenarios (each runs in its own child process) -------------------------------------------------------------


def scenario_template(work: Path, params: Result) -> Result:
    """Device A's vault, created with crdtsync's default Argon2id parameters and the corpus imported (untimed
    for the targets; copied for each store)."""
    from crdtsync.vault import Vault

    path = work / "template"
    Vault.init(path, name="bench", device_name="A", passphrase=PASSPHRASE)
    out: Result = {}
    with Vault.open(path) as vault:
        with timed(out, "import_s"):
            report = vault.import_path(work / "corpus.jsonl")
        out.update(added=report.added, skipped=report.skipped, problems=len(report.problems),
                   memories=vault.status()["memories"])
    out["vault_mb"] = harness.folder_mb(path)
    return out


VAULT, REPLICA, SYNC = "crdtsync.vault:Vault", "crdtsync.store.replica:Replica", "crdtsync.mailbox.sync"
REPLICATION_COMMIT = "crdtsync.replication:AuthorLogReplica.commit"
BACKEND, STORE, WORKER = "crdtsync.mailbox.backend:BlobStore", "crdtsync.store.db:Store", \
    "crdtsync.store.worker:IntegrationWorker"


def _push_stopwatch() -> Stopwatch:
    watch = Stopwatch()
    wrap_any(watch, "add_relay: publish vault.json (get + put)", f"{SYNC}:publish_header")
    wrap_any(watch, "registry reads (devices)", f"{REPLICA}.devices", f"{VAULT}.devices")
    wrap_any(watch, "commit A's first log entry (AuthorLogReplica.commit)", REPLICATION_COMMIT)
    wrap_any(watch, "  load A's Doc (snapshot + log)", f"{REPLICA}._load_doc", f"{VAULT}._load_doc")
    wrap_any(watch, "  encode A's whole contribution (own_contribution)", f"{REPLICA}.own_contribution",
             f"{VAULT}.own_contribution")
    # the modules import these by name: their own references are the ones called
    wrap_any(watch, "  split + seal envelopes (seal_entry)", f"{SYNC}:seal_entry",
             "crdtsync.protocol.sealing:seal_entry")
    wrap_any(watch, "    pack the objects (msgpack)", "crdtsync.protocol.sealing:pack_parts",
             "crdtsync.protocol.messages:pack_parts")
    wrap_any(watch, "  keep the sealed entry (Store.put_entry; not the commit's fsync)", f"{STORE}.put_entry")
    wrap_any(watch, "put the entry and the head (AuthorLogSync._put)", f"{SYNC}:AuthorLogSync._put")
    wrap_any(watch, "  read the held entries' sizes (Store.entry_sizes)", f"{STORE}.entry_sizes")
    wrap_any(watch, "  read the held entries (Store.entry_parts)", f"{STORE}.entry_parts")
    wrap_any(watch, "store get", f"{BACKEND}.get")
    wrap_any(watch, "store put", f"{BACKEND}.put")
    wrap_any(watch, "store list", f"{BACKEND}.list", f"{BACKEND}.walk")
    wrap_any(watch, "pull (nothing to fetch yet)", f"{SYNC}:AuthorLogSync._pull")
    return watch


def scenario_push(work: Path, params: Result) -> Result:
    """A's first push: ``add_relay`` + ``sync()`` of the whole vault."""
    from crdtsync.vault import Vault

    tap = StoreTap()
    tap.install()
    counter = api_counter(params)
    watch = _push_stopwatch()
    out: Result = {}
    with Vault.open(store_dir(params) / "A") as vault:
        base = reset_peak()
        with timed(out, "add_relay_s"):
            vault.add_relay("box", store_url(params, "mailbox"))
        with timed(out, "sync_s"):
            reports = vault.sync("box")
        out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["seconds"] = out["add_relay_s"] + out["sync_s"]
    out["report"] = reports[0].to_json()
    out["stats"] = tap.totals()
    out["api"] = counter.snapshot() if counter else None
    out["breakdown"] = watch.snapshot()
    return out


def _join_stopwatch() -> Stopwatch:
    watch = Stopwatch()
    wrap_any(watch, "Argon2id (unwrap the vault key)", "crdtsync.crypto.header:_derive_kek")
    wrap_any(watch, "create B's store + register B (local)", "crdtsync._vault_create:create_store")
    wrap_any(watch, "fetch: store list", f"{BACKEND}.list")
    wrap_any(watch, "fetch: store get", f"{BACKEND}.get")
    wrap_any(watch, "open envelopes (verify + decrypt)", "crdtsync.protocol.sealing:open_envelope")
    wrap_any(watch, "join chunks", "crdtsync.protocol.sealing:join_chunks")
    wrap_any(watch, "parse batch bodies", "crdtsync.protocol.messages:Batch.from_body")
    wrap_any(watch, "strict reader #2 (apply_updates)", "crdtsync.store.integration:decode_update")
    wrap_any(watch, "keep the received entries as they came (Store.put_entry)", f"{STORE}.put_entry")
    wrap_any(watch, "store the update in the inbox (Store.hold)", f"{STORE}.hold")
    wrap_any(watch, "missing_dependencies", "crdtsync.store.integration:missing_dependencies")
    wrap_any(watch, "load B's Doc", f"{REPLICA}._load_doc", f"{VAULT}._load_doc")
    wrap_any(watch, "integration worker: spawn + load B's Doc", f"{WORKER}.__init__")
    wrap_any(watch, "integration worker: apply (child), schema check + rows (here)", f"{WORKER}.apply")
    wrap_any(watch, "  of which store rows + FTS (Store.put_rows)", f"{STORE}.put_rows")
    wrap_any(watch, "live apply (Doc loaded only) + log (_integrate_checked)", f"{REPLICA}._integrate_checked",
             f"{VAULT}._integrate_checked")
    wrap_any(watch, "compaction (_maybe_compact)", f"{REPLICA}._maybe_compact", f"{VAULT}._maybe_compact")
    wrap_any(watch, "registry reads (devices)", f"{REPLICA}.devices", f"{VAULT}.devices")
    wrap_any(watch, "commit B's registration (AuthorLogReplica.commit)", REPLICATION_COMMIT)
    wrap_any(watch, "  of which store put", f"{BACKEND}.put")
    return watch


def _one_join(path: Path, url: str, tap: StoreTap, counter: ApiCounter | None, watch: Stopwatch) -> Result:
    """Join into ``path`` and measure it; never raises a crdtsync error (it is reported)."""
    from crdtsync.errors import CrdtsyncError
    from crdtsync.vault import Vault

    tap.stores.clear()
    tap.reports.clear()
    watch.reset()
    api_before = counter.snapshot() if counter else {}
    out: Result = {}
    base = reset_peak()
    start = time.perf_counter()
    try:
        Vault.join(path, url, passphrase=PASSPHRASE, device_name=path.name)
        out["status"] = "joined"
    except CrdtsyncError as exc:
        out["status"] = f"failed [{exc.code}]"
        out["error"] = exc.message
    out["seconds"] = time.perf_counter() - start
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["stats"] = tap.totals()
    out["reports"] = list(tap.reports)
    out["api"] = counter.since(api_before) if counter else None
    out["breakdown"] = watch.snapshot()
    return out


def scenario_join(work: Path, params: Result) -> Result:
    """B joins through the mailbox: header, Argon2id, pull of everything, integration, registration push."""
    from crdtsync.vault import Vault

    tap = StoreTap()
    tap.install()
    counter = api_counter(params)
    watch = _join_stopwatch()
    url = store_url(params, "mailbox")
    out: Result = {"default": _one_join(store_dir(params) / "B", url, tap, counter, watch)}
    joined = store_dir(params) / "B"
    if out["default"]["status"] != "joined":
        deadline = float(params["apply_deadline"])
        original = Vault.open

        def open_with_deadline(path: Any, *, agent: str | None = None, deadline: float = deadline) -> Vault:
            return original(path, agent=agent, deadline=deadline)

        Vault.open = staticmethod(open_with_deadline)  # type: ignore[method-assign,assignment]
        joined = store_dir(params) / "B-long-deadline"
        out["long"] = _one_join(joined, url, tap, counter, watch)
        out["long"]["deadline_s"] = deadline
        Vault.open = original  # type: ignore[method-assign]
    out["joined_path"] = str(joined)
    out["db"] = db_usage(joined)  # before anything else opens it: what the join left on disk
    with Vault.open(joined) as vault:
        out["memories_on_b"] = vault.status()["memories"]
        out["conflicts_on_b"] = len(vault.conflicts())
    out["worker_peak_mb"] = harness.children_peak_mb()
    return out


def db_usage(vault_path: Path) -> Result:
    """What a vault's ``vault.db`` takes on disk: the file and its WAL in bytes, the bytes of each table with its
    indexes (SQLite's ``dbstat``: pages in use; free pages are ``(free pages)``), and the bytes of the received
    entries kept as they came (``sum(length(parts))`` of the ``entries`` table; 0 before protocol v2)."""
    import sqlite3

    db = vault_path / "vault.db"
    wal = db.with_name(db.name + "-wal")
    out: Result = {"file_bytes": db.stat().st_size, "wal_bytes": wal.stat().st_size if wal.exists() else 0}
    conn = sqlite3.connect(db)
    try:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE name IS NOT NULL"))
        tables: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            tables[table] = tables.get(table, 0) + int(size)
        page_size, free = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "freelist_count"))
        tables["(free pages)"] = page_size * free
        out["tables"] = dict(sorted(tables.items(), key=lambda kv: -kv[1]))
        has_entries = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries'").fetchone()
        out["entries_parts_bytes"] = int(conn.execute(
            "SELECT coalesce(sum(length(parts)), 0) FROM entries").fetchone()[0]) if has_entries else 0
        out["entries_rows"] = conn.execute("SELECT count(*) FROM entries").fetchone()[0] if has_entries else 0
    finally:
        conn.close()
    return out


def _carry_stopwatch() -> Stopwatch:
    watch = Stopwatch()
    wrap_any(watch, "add_relay: publish vault.json (get + put)", f"{SYNC}:publish_header")
    wrap_any(watch, "list each relay + read changed heads (AuthorLogSync._look)", f"{SYNC}:AuthorLogSync._look")
    wrap_any(watch, "pull (nothing new)", f"{SYNC}:AuthorLogSync._pull")
    wrap_any(watch, "put what each relay lacks (AuthorLogSync._put)", f"{SYNC}:AuthorLogSync._put")
    wrap_any(watch, "  read the held entries' sizes (Store.entry_sizes)", f"{STORE}.entry_sizes")
    wrap_any(watch, "  read the held entries (Store.entry_parts)", f"{STORE}.entry_parts")
    wrap_any(watch, "  store put", f"{BACKEND}.put")
    wrap_any(watch, "store list", f"{BACKEND}.walk")
    wrap_any(watch, "store get", f"{BACKEND}.get")
    wrap_any(watch, "registry reads (devices)", f"{REPLICA}.devices", f"{VAULT}.devices")
    return watch


def _timed_sync(vault: Any, out: Result, tap: StoreTap, counter: ApiCounter | None, watch: Stopwatch,
                add: tuple[str, str] | None = None, **sync_args: Any) -> None:
    """``vault.sync(**sync_args)`` (after ``add_relay(*add)`` when given, timed with it), measured into ``out``:
    seconds, peak RSS, the summed store stats, the S3 requests, one report per relay, the breakdown."""
    stats_before, api_before = tap.totals(), counter.snapshot() if counter else {}
    watch.reset()
    base = reset_peak()
    if add is not None:
        with timed(out, "add_relay_s"):
            vault.add_relay(*add)
    with timed(out, "sync_s"):
        reports = vault.sync(**sync_args)
    out["seconds"] = out.get("add_relay_s", 0.0) + out["sync_s"]
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["stats"] = diff_stats(tap.totals(), stats_before)
    out["api"] = counter.since(api_before) if counter else None
    out["reports"] = [report.to_json() for report in reports]
    out["breakdown"] = watch.snapshot()


def _memories(path: Path) -> int:
    from crdtsync.vault import Vault

    with Vault.open(path) as vault:
        count: int = vault.status()["memories"]
    return count


def scenario_bridge(work: Path, params: Result) -> Result:
    """A bridged chain of three devices over two relays: B (joined through relay R1, the ``join`` scenario's)
    adds relay R2 and syncs, carrying A's entries into R2 byte for byte; then C joins through R2 alone."""
    from crdtsync.vault import Vault

    tap = StoreTap()
    tap.install()
    counter = api_counter(params)
    carry_watch, join_watch = _carry_stopwatch(), _join_stopwatch()
    b_path = Path(json.loads((work / f"{params['store']}__join.json").read_text())["joined_path"])
    out: Result = {"memories_on_a": _memories(store_dir(params) / "A"), "carry": {}}
    with Vault.open(b_path) as b:
        _timed_sync(b, out["carry"], tap, counter, carry_watch, add=("r2", store_url(params, "mailbox2")))
    out["join_c"] = _one_join(store_dir(params) / "C", store_url(params, "mailbox2"), tap, counter, join_watch)
    out["worker_peak_mb"] = harness.children_peak_mb()
    if out["join_c"]["status"] == "joined":
        out["db_c"] = db_usage(store_dir(params) / "C")
        out["memories_on_c"] = _memories(store_dir(params) / "C")
    return out


def _relay_store(params: Result) -> tuple[Any, str]:
    """The mailbox (R1) as a store of its own (its stats apart from the vaults'), and the vault's ``a/`` folder."""
    from crdtsync.crypto.keys import vault_tag
    from crdtsync.mailbox.backend import open_store
    from crdtsync.protocol.mailbox import AUTHORS, vault_prefix
    from crdtsync.store.keystore import load_secrets

    secrets = load_secrets(store_dir(params) / "A")
    return open_store(store_url(params, "mailbox")), f"{vault_prefix(vault_tag(secrets.vault_id))}/{AUTHORS}"


def scenario_heal(work: Path, params: Result) -> Result:
    """The relay loses 10% of the objects under the vault's ``a/`` folder, picked with a fixed seed and deleted
    through the store; A's next sync (a fresh ``Vault``, as a ``crdtsync sync`` process) puts them back; then a
    fresh device joins. The loss and the heal are repeated with the next seeds (:data:`HEAL_ROUNDS` in all),
    so that every kind of object (heads, small entries, parts of the big first entry) is lost in some round;
    the first seed's round is the headline figure."""
    from crdtsync.vault import Vault

    out: Result = {}
    # A is up to date first (it holds the floor's edit, unpushed), so that the timed syncs only heal
    with Vault.open(store_dir(params) / "A") as a, timed(out, "presync_s"):
        out["presync_reports"] = [report.to_json() for report in a.sync("box")]
        out["memories_on_a"] = a.status()["memories"]
    tap = StoreTap()
    tap.install()
    counter = api_counter(params)
    watch = _carry_stopwatch()
    out["rounds"] = [_heal_round(work, params, seed, tap, counter, watch)
                     for seed in range(HEAL_SEED, HEAL_SEED + HEAL_ROUNDS)]
    out |= out["rounds"][0]
    out["join"] = _one_join(store_dir(params) / "D", store_url(params, "mailbox"), tap, counter, _join_stopwatch())
    out["worker_peak_mb"] = harness.children_peak_mb()
    if out["join"]["status"] == "joined":
        out["memories_on_d"] = _memories(store_dir(params) / "D")
    return out


def _heal_round(work: Path, params: Result, seed: int, tap: StoreTap, counter: ApiCounter | None,
                watch: Stopwatch) -> Result:
    """Delete :data:`HEAL_SHARE` of the objects under ``a/`` (``random.Random(seed)``), then A's timed sync."""
    import random

    from crdtsync.store.keystore import load_secrets
    from crdtsync.vault import Vault

    relay, folder = _relay_store(params)
    before = relay.walk(folder)
    # the same objects for a seed in every run: authors by role (A, B), then the object's name in the folder
    b_path = Path(json.loads((work / f"{params['store']}__join.json").read_text())["joined_path"])
    roles = {load_secrets(path).device.device_id: role
             for role, path in (("A", store_dir(params) / "A"), ("B", b_path))}

    def stable(key: str) -> tuple[str, str]:
        author, _, rest = key[len(folder) + 1:].partition("/")
        return roles.get(author, "other"), rest

    keys = sorted(before, key=stable)
    lost = sorted(random.Random(seed).sample(keys, max(1, round(len(keys) * HEAL_SHARE))), key=stable)
    for key in lost:
        relay.delete(key)
    out: Result = {"seed": seed, "objects_before": len(before),
                   "bytes_before": sum(size for size, _ in before.values()),
                   "lost": [{"author": stable(k)[0], "name": stable(k)[1], "bytes": before[k][0]} for k in lost],
                   "lost_bytes": sum(before[k][0] for k in lost), "left": len(relay.walk(folder))}
    with Vault.open(store_dir(params) / "A") as a:
        _timed_sync(a, out, tap, counter, watch, relay="box")
    after = relay.walk(folder)
    out["still_missing"] = ["/".join(stable(k)) for k in lost if k not in after]
    out["put_back"] = sum(k in after for k in lost)
    out["changed"] = ["/".join(stable(k)) for k in before if k in after and after[k][0] != before[k][0]]
    return out


def _pull_stopwatch() -> Stopwatch:
    watch = Stopwatch()
    wrap_any(watch, "load the Doc (snapshot + log)", f"{REPLICA}._load_doc", f"{VAULT}._load_doc")
    wrap_any(watch, "read a head (get + open)", f"{SYNC}:AuthorLogSync._read_head")
    wrap_any(watch, "store get", f"{BACKEND}.get")
    wrap_any(watch, "store put", f"{BACKEND}.put")
    wrap_any(watch, "store list", f"{BACKEND}.list")
    wrap_any(watch, "strict reader #2 (apply_updates)", "crdtsync.store.integration:decode_update")
    wrap_any(watch, "integration worker: spawn + load the whole Doc", f"{WORKER}.__init__")
    wrap_any(watch, "integration worker: apply + schema check", f"{WORKER}.apply")
    wrap_any(watch, "live apply + log + store rows", f"{REPLICA}._integrate_checked", f"{VAULT}._integrate_checked")
    wrap_any(watch, "compaction check (_maybe_compact)", f"{REPLICA}._maybe_compact", f"{VAULT}._maybe_compact")
    wrap_any(watch, "registry reads (devices)", f"{REPLICA}.devices", f"{VAULT}.devices")
    wrap_any(watch, "commit the next log entry (AuthorLogReplica.commit)", REPLICATION_COMMIT)
    wrap_any(watch, "put what the relay lacks (AuthorLogSync._put)", f"{SYNC}:AuthorLogSync._put")
    wrap_any(watch, "  read the held entries' sizes (Store.entry_sizes)", f"{STORE}.entry_sizes")
    return watch


def scenario_edit(work: Path, params: Result) -> Result:
    """One edit among N: A pushes it, B pulls it; round 1 cold (fresh Vault objects), later rounds warm."""
    from crdtsync.vault import Vault

    tap = StoreTap()
    tap.install()
    counter = api_counter(params)
    watch = _pull_stopwatch()
    ids: list[str] = json.loads((work / "edit_ids.json").read_text())
    rounds = max(1, min(int(params["edit_rounds"]), len(ids)))
    a_path = store_dir(params) / "A"
    b_path = Path(json.loads((work / f"{params['store']}__join.json").read_text())["joined_path"])
    out: Result = {"rounds": []}
    with Vault.open(a_path) as setup:  # A takes B's registration: both are then in sync
        with timed(out, "setup_sync_s"):
            report = setup.sync()[0]
        out["setup_report"] = report.to_json()
    a: Vault | None = None
    b: Vault | None = None
    try:
        for index in range(rounds):
            row: Result = {"memory_id": ids[index]}
            if a is None:  # round 1: the edit in one Vault object, the push in a fresh one (two CLI calls)
                with Vault.open(a_path) as editor:
                    content = editor.get(ids[index]).content + f" (edited {index})"
                    with timed(row, "edit_s"):
                        editor.update(ids[index], content=content)
                a = Vault.open(a_path)
                b = Vault.open(b_path)
            else:
                content = a.get(ids[index]).content + f" (edited {index})"
                with timed(row, "edit_s"):
                    a.update(ids[index], content=content)
            assert b is not None
            for side, vault, push, pull in (("push", a, True, False), ("pull", b, False, True)):
                watch.reset()
                stats_before, api_before = tap.totals(), counter.snapshot() if counter else {}
                with timed(row, f"{side}_s"):
                    report = vault.sync(push=push, pull=pull)[0]  # A's relay "box", B's "default"
                row[f"{side}_stats"] = diff_stats(tap.totals(), stats_before)
                row[f"{side}_report"] = report.to_json()
                row[f"{side}_api"] = counter.since(api_before) if counter else None
                row[f"{side}_breakdown"] = watch.snapshot()
            row["converged"] = b.get(ids[index]).content == content
            out["rounds"].append(row)
    finally:
        for vault in (a, b):
            if vault is not None:
                vault.close()
    return out


def _seal_body(secrets: Any, body: bytes) -> bytes:
    """``body`` split with ``split_body``, each chunk sealed as a snapshot envelope under ``secrets``' keys, the
    envelopes packed in one msgpack array (the mailbox's object format)."""
    from crdtsync.crypto.envelope import KIND_SNAPSHOT, seal, split_body
    from crdtsync.protocol.messages import pack_part

    epoch = secrets.current_epoch
    return pack_part([seal(vault_id=secrets.vault_id, epoch=epoch, vault_key=secrets.epochs[epoch],
                             sender=secrets.device, kind=KIND_SNAPSHOT, body=chunk, sealed_count=i)
                        for i, chunk in enumerate(split_body(body))])


def _open_object(secrets: Any, data: bytes) -> bytes:
    """The body of an object written by :func:`_seal_body`: every envelope opened, the chunks joined."""
    import msgpack

    from crdtsync.crypto.envelope import join_chunks, open_envelope

    keys = secrets.device

    def sender_key(device_id: str, epoch: int) -> bytes | None:
        return bytes(keys.sign_pk) if device_id == keys.device_id else None

    envelopes = msgpack.unpackb(data, raw=False)
    return join_chunks(open_envelope(e, vault_id=secrets.vault_id, epoch_keys=secrets.epochs,
                                     sender_key=sender_key).body for e in envelopes)


def scenario_floor_push(work: Path, params: Result) -> Result:
    """The floor's upload: A's whole Doc as one encrypted object; then again after one edit."""
    from crdtsync.mailbox.backend import open_store
    from crdtsync.vault import Vault

    counter = api_counter(params)
    ids: list[str] = json.loads((work / "edit_ids.json").read_text())
    store = open_store(store_url(params, "floor"))
    out: Result = {}
    with Vault.open(store_dir(params) / "A") as vault:
        secrets = vault.secrets
        with timed(out, "load_encode_s"):
            full = vault.encode_update()
        with timed(out, "seal_s"):
            obj = _seal_body(secrets, full)
        out["update_bytes"], out["object_bytes"] = len(full), len(obj)
        api_before = counter.snapshot() if counter else {}
        with timed(out, "put_s"):
            store.put("vault.bin", obj)
        out["api"] = counter.since(api_before) if counter else None
        out["stats"] = stats_of(store)
        memory_id = ids[-1]
        vault.update(memory_id, content=vault.get(memory_id).content + " (floor edit)")
        with timed(out, "edit_encode_s"):
            full = vault.encode_update()
        with timed(out, "edit_seal_s"):
            obj = _seal_body(secrets, full)
        before, api_before = stats_of(store), counter.snapshot() if counter else {}
        with timed(out, "edit_put_s"):
            store.put("vault-edit.bin", obj)
        out["edit_api"] = counter.since(api_before) if counter else None
        out["edit_stats"] = diff_stats(stats_of(store), before)
    return out


def scenario_floor_pull(work: Path, params: Result) -> Result:
    """The floor's download: get, open, join and apply the whole file to a fresh Doc; then the edited file
    onto that Doc."""
    from pycrdt import Doc, Map

    from crdtsync.mailbox.backend import open_store
    from crdtsync.store.keystore import load_secrets

    counter = api_counter(params)
    secrets = load_secrets(store_dir(params) / "A")  # the floor's reader already holds the keys
    store = open_store(store_url(params, "floor"))
    out: Result = {}
    base = reset_peak()
    api_before = counter.snapshot() if counter else {}
    with timed(out, "get_s"):
        data = store.get("vault.bin")
    assert data is not None, "the floor object is missing"
    out["api"] = counter.since(api_before) if counter else None
    with timed(out, "open_s"):
        body = _open_object(secrets, data)
    with timed(out, "apply_s"):
        doc: Doc[Any] = Doc()
        doc.apply_update(body)
    out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
    out["records"] = len(doc.get("memories", type=Map))
    out["stats"] = stats_of(store)
    del data, body
    before, api_before = stats_of(store), counter.snapshot() if counter else {}
    with timed(out, "edit_get_s"):
        data = store.get("vault-edit.bin")
    assert data is not None, "the edited floor object is missing"
    out["edit_api"] = counter.since(api_before) if counter else None
    with timed(out, "edit_open_s"):
        body = _open_object(secrets, data)
    with timed(out, "edit_apply_s"):
        doc.apply_update(body)
    out["edit_stats"] = diff_stats(stats_of(store), before)
    del doc, data, body
    try:
        out["materialize_s"] = _materialize_rows(work, params)
    except Exception as exc:  # crdtsync's internals move; this row is information only
        out["materialize_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _materialize_rows(work: Path, params: Result) -> float:
    """Information for the floor: the time to store the N memories as crdtsync's materialized rows (SQLite +
    FTS5, ``Store.put_rows`` in one transaction) in a fresh vault database, the part of a join that any
    design keeping SQLite as the state of record pays on top of the floor. Rows are built untimed
    (``memory_row``), so this is SQLite's own work only."""
    from crdtsync.model.records import Memory
    from crdtsync.store.db import Store
    from crdtsync.store.memories import memory_row

    rows = [memory_row(Memory(id=r["id"], content=r["content"], category=r["category"], tags=frozenset(r["tags"]),
                              source=r["source"], metadata=r["metadata"], created=r["created"],
                              updated=r["created"], created_by="0" * 16, updated_by="0" * 16), [])
            for r in read_jsonl(work / "corpus.jsonl")]
    path = store_dir(params) / "floor-materialize"
    path.mkdir(parents=True, exist_ok=True)
    store = Store(path / "vault.db")
    try:
        start = time.perf_counter()
        with store.write():
            store.put_rows(rows)
        return time.perf_counter() - start
    finally:
        store.close()


def _naive_rows(work: Path, params: Result) -> list[dict[str, Any]]:
    rows = read_jsonl(work / "corpus.jsonl")
    return rows[: int(params["naive_n"])]


def scenario_naive_push(work: Path, params: Result) -> Result:
    """The naive layout's upload: one sealed object per memory; then one edited memory re-sealed and put."""
    from crdtsync.crypto.envelope import KIND_UPDATE, seal
    from crdtsync.mailbox.backend import open_store
    from crdtsync.store.keystore import load_secrets

    counter = api_counter(params)
    secrets = load_secrets(store_dir(params) / "A")
    epoch = secrets.current_epoch
    rows = _naive_rows(work, params)
    store = open_store(store_url(params, "naive"))
    out: Result = {"records": len(rows)}

    def sealed(body: bytes, count: int) -> bytes:
        return seal(vault_id=secrets.vault_id, epoch=epoch, vault_key=secrets.epochs[epoch],
                    sender=secrets.device, kind=KIND_UPDATE, body=body, sealed_count=count)

    with timed(out, "seal_s"):
        envelopes = [(row["id"], sealed(record_json(row), i)) for i, row in enumerate(rows)]
    api_before = counter.snapshot() if counter else {}
    with timed(out, "put_s"):
        for memory_id, envelope in envelopes:
            store.put(f"m/{memory_id}", envelope)
    out["api"] = counter.since(api_before) if counter else None
    out["stats"] = stats_of(store)
    edited = dict(rows[len(rows) // 2])
    edited["content"] += " (naive edit)"
    out["edit_id"] = edited["id"]
    (store_dir(params) / "naive_edit_id.txt").write_text(edited["id"])
    before, api_before = stats_of(store), counter.snapshot() if counter else {}
    with timed(out, "edit_put_s"):
        store.put(f"m/{edited['id']}", sealed(record_json(edited), len(rows)))
    out["edit_api"] = counter.since(api_before) if counter else None
    out["edit_stats"] = diff_stats(stats_of(store), before)
    return out


def scenario_naive_pull(work: Path, params: Result) -> Result:
    """The naive layout's download: list, get every object, open and parse each; then list + one get."""
    from crdtsync.crypto.envelope import open_envelope
    from crdtsync.mailbox.backend import open_store
    from crdtsync.store.keystore import load_secrets

    counter = api_counter(params)
    secrets = load_secrets(store_dir(params) / "A")
    keys = secrets.device

    def sender_key(device_id: str, epoch: int) -> bytes | None:
        return bytes(keys.sign_pk) if device_id == keys.device_id else None

    def opened(data: bytes) -> dict[str, Any]:
        body = open_envelope(data, vault_id=secrets.vault_id, epoch_keys=secrets.epochs, sender_key=sender_key).body
        record: dict[str, Any] = json.loads(body)
        return record

    store = open_store(store_url(params, "naive"))
    out: Result = {}
    api_before = counter.snapshot() if counter else {}
    with timed(out, "list_s"):
        names = store.list("m")
    out["list_api"] = counter.since(api_before) if counter else None
    fetched: list[bytes] = []
    with timed(out, "get_s"):
        for name in names:
            data = store.get(f"m/{name}")
            assert data is not None, f"naive object {name} vanished"
            fetched.append(data)
    out["api"] = counter.since(api_before) if counter else None
    with timed(out, "open_s"):
        memories = {name: opened(data) for name, data in zip(names, fetched, strict=True)}
    out["records"] = len(memories)
    out["stats"] = stats_of(store)
    del fetched
    edit_id = (store_dir(params) / "naive_edit_id.txt").read_text().strip()
    before, api_before = stats_of(store), counter.snapshot() if counter else {}
    with timed(out, "edit_list_s"):
        store.list("m")
    out["edit_list_api"] = counter.since(api_before) if counter else None
    with timed(out, "edit_get_s"):
        data = store.get(f"m/{edit_id}")
    assert data is not None, "the edited naive object is missing"
    with timed(out, "edit_open_s"):
        memories[edit_id] = opened(data)
    out["edit_api"] = counter.since(api_before) if counter else None
    out["edit_stats"] = diff_stats(stats_of(store), before)
    out["edit_seen"] = memories[edit_id]["content"].endswith(" (naive edit)")
    return out


SCENARIOS: dict[str, Callable[[Path, Result], Result]] = {
    "template": scenario_template,
    "push": scenario_push,
    "join": scenario_join,
    "edit": scenario_edit,
    "floor_push": scenario_floor_push,
    "floor_pull": scenario_floor_pull,
    "naive_push": scenario_naive_push,
    "naive_pull": scenario_naive_pull,
    "bridge": scenario_bridge,
    "heal": scenario_heal,
}


def result_name(name: str, store: str | None) -> str:
    """The file stem of a scenario's result."""
    return name if store is None else f"{store}__{name}"


def run_here(name: str, work: Path, params: Result, profile: bool) -> None:
    """Child-process entry: run one scenario and write its JSON result under :func:`result_name` (and a
    cProfile top 40 when asked), with moto's request log quiet."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    harness.run_scenario_here(SCENARIOS, name, work, params, profile=profile,
                              stem=result_name(name, params.get("store")))


# -- the parent: corpus, moto, children, report -----------------------------------------------------------------


def prepare(work: Path, n: int, edit_rounds: int) -> Result:
    """Build the corpus JSONL and the ids edited in the "one edit" scenarios (none of it timed)."""

    def edit_ids(base: list[dict[str, Any]]) -> None:
        picks = {n // 2 + 7919 * k % max(1, n // 2) for k in range(edit_rounds + 1)}
        ids = [row["id"] for i, row in enumerate(repeated(base, n)) if i in picks]
        (work / "edit_ids.json").write_text(json.dumps(ids))

    return harness.prepare_corpus(work, n, edit_ids)


def start_moto() -> Any:
    """Start moto's S3 server on 127.0.0.1 (a free port), point the AWS variables at it (children inherit
    them) and create the bucket. Returns the server (call ``stop()``)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    if host != "127.0.0.1":
        server.stop()
        raise RuntimeError(f"moto listens on {host}, not 127.0.0.1")
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET)
    return server


def child(name: str, work: Path, params: Result, *, timeout: float, profile: bool) -> Result:
    """Run one scenario of this script in a fresh interpreter (:func:`bench._harness.run_child`); returns its
    result, or ``{"error": ...}``."""
    return harness.run_child(Path(__file__).resolve(), name, work, params, timeout=timeout, profile=profile,
                             stem=result_name(name, params.get("store")))


def _machine() -> Result:
    """Where the figures were measured (:func:`bench._harness.machine`), with the versions of the S3 stack."""
    return harness.machine(("pycrdt", "moto", "s3fs", "fsspec", "aiobotocore", "cryptography"))


# -- summary: figures per store, extrapolation, targets -------------------------------------------------------


def _ok(result: Result | None) -> bool:
    return isinstance(result, dict) and bool(result) and "error" not in result


def _joined(join: Result) -> Result:
    """The join that succeeded (the long-deadline retry when the default one failed)."""
    return join.get("long", join["default"]) if join.get("default", {}).get("status") != "joined" else join["default"]


def _api_total(api: dict[str, int] | None) -> int | None:
    return None if api is None else sum(api.values())


def _scale_api(api: dict[str, int] | None, factor: float, n: int) -> dict[str, int] | None:
    """S3 request counts measured on the naive layout's smaller set, extrapolated to ``n`` memories: every
    request scales linearly except the listing, which takes one ListObjectsV2 page per 1,000 keys."""
    if api is None:
        return None
    scaled = {k: round(v * factor) for k, v in api.items() if k != "ListObjectsV2"}
    if "ListObjectsV2" in api:
        measured_pages = max(1, math.ceil(n / factor / S3_LIST_PAGE))
        scaled["ListObjectsV2"] = round(api["ListObjectsV2"] / measured_pages * math.ceil(n / S3_LIST_PAGE))
    return scaled


def summarize(store: str, s: Result, params: Result) -> Result:
    """The figures of one store's tables: cold sync and one edit for crdtsync, the floor and the naive layout,
    and the targets."""
    n = params["n"]
    out: Result = {"cold": {}, "edit": {}, "targets": []}
    push, join, edit = s.get("push"), s.get("join"), s.get("edit")
    if _ok(push) and _ok(join):
        j = _joined(join)
        out["cold"]["crdtsync"] = {
            "up_s": push["seconds"], "down_s": j["seconds"], "total_s": push["seconds"] + j["seconds"],
            "bytes_up": push["stats"]["bytes_up"], "bytes_down": j["stats"]["bytes_down"],
            "ops_up": push["stats"]["operations"], "ops_down": j["stats"]["operations"],
            "api_up": push["api"], "api_down": j["api"], "stats_up": push["stats"], "stats_down": j["stats"],
            "note": "" if j is join["default"] else f"the join with the default deadline {join['default']['status']};"
                    f" figures of the retry with deadline {j.get('deadline_s', 0):g} s",
        }
    fp, fl = s.get("floor_push"), s.get("floor_pull")
    if _ok(fp) and _ok(fl):
        out["cold"]["floor"] = {
            "up_s": fp["put_s"], "down_s": fl["get_s"] + fl["open_s"] + fl["apply_s"],
            "total_s": fp["put_s"] + fl["get_s"] + fl["open_s"] + fl["apply_s"],
            "bytes_up": fp["stats"]["bytes_up"], "bytes_down": fl["stats"]["bytes_down"],
            "ops_up": fp["stats"]["operations"], "ops_down": fl["stats"]["operations"],
            "api_up": fp["api"], "api_down": fl["api"],
            "extra_up_s": fp["load_encode_s"] + fp["seal_s"], "materialize_s": fl.get("materialize_s"),
        }
        out["edit"]["floor"] = {
            "up_s": fp["edit_put_s"], "down_s": fl["edit_get_s"] + fl["edit_open_s"] + fl["edit_apply_s"],
            "bytes_up": fp["edit_stats"]["bytes_up"], "bytes_down": fl["edit_stats"]["bytes_down"],
            "ops_up": fp["edit_stats"]["operations"], "ops_down": fl["edit_stats"]["operations"],
            "api_up": fp["edit_api"], "api_down": fl["edit_api"],
            "extra_up_s": fp["edit_encode_s"] + fp["edit_seal_s"],
        }
    npu, npl = s.get("naive_push"), s.get("naive_pull")
    if _ok(npu) and _ok(npl):
        measured_n = npu["records"]
        f = n / measured_n if measured_n else 1.0
        out["naive_n"], out["naive_factor"] = measured_n, f
        out["cold"]["naive"] = {
            "up_s": (npu["seal_s"] + npu["put_s"]) * f, "down_s": (npl["list_s"] + npl["get_s"] + npl["open_s"]) * f,
            "total_s": (npu["seal_s"] + npu["put_s"] + npl["list_s"] + npl["get_s"] + npl["open_s"]) * f,
            "bytes_up": round(npu["stats"]["bytes_up"] * f), "bytes_down": round(npl["stats"]["bytes_down"] * f),
            "ops_up": round(npu["stats"]["operations"] * f),
            "ops_down": 1 + round((npl["stats"]["operations"] - 1) * f),
            "api_up": _scale_api(npu["api"], f, n), "api_down": _scale_api(npl["api"], f, n),
            "extrapolated": f != 1.0,
        }
        edit_api = None
        if npl["edit_api"] is not None:  # the listing grows with N (S3 pages of 1,000 keys); the get does not
            list_only = npl["edit_list_api"] or {}
            get_only = {k: v - list_only.get(k, 0) for k, v in npl["edit_api"].items() if v - list_only.get(k, 0)}
            scaled = _scale_api(list_only, f, n) or {}
            edit_api = {k: get_only.get(k, 0) + scaled.get(k, 0) for k in {*get_only, *scaled}}
        out["edit"]["naive"] = {
            "up_s": npu["edit_put_s"], "down_s": npl["edit_list_s"] * f + npl["edit_get_s"] + npl["edit_open_s"],
            "bytes_up": npu["edit_stats"]["bytes_up"], "bytes_down": npl["edit_stats"]["bytes_down"],
            "ops_up": npu["edit_stats"]["operations"], "ops_down": npl["edit_stats"]["operations"],
            "api_up": npu["edit_api"], "api_down": edit_api, "extrapolated": f != 1.0,
        }
    if _ok(edit) and edit["rounds"]:
        rounds = edit["rounds"]
        first, warm = rounds[0], rounds[1:]
        for label, picked in (("crdtsync_cold", [first]), ("crdtsync_warm", warm)):
            if not picked:
                continue
            out["edit"][label] = {
                "up_s": statistics.median(r["push_s"] for r in picked),
                "down_s": statistics.median(r["pull_s"] for r in picked),
                "bytes_up": max(r["push_stats"]["bytes_up"] for r in picked),
                "bytes_down": max(r["pull_stats"]["bytes_down"] for r in picked),
                "bytes_a": max(r["push_stats"]["bytes_up"] + r["push_stats"]["bytes_down"] for r in picked),
                "bytes_b": max(r["pull_stats"]["bytes_up"] + r["pull_stats"]["bytes_down"] for r in picked),
                "ops_up": max(r["push_stats"]["operations"] for r in picked),
                "ops_down": max(r["pull_stats"]["operations"] for r in picked),
                "api_up": picked[0]["push_api"], "api_down": picked[0]["pull_api"],
                "rounds": len(picked), "converged": all(r["converged"] for r in picked),
            }
        worst = {k: max(r[f"{side}_stats"][key] + (r[f"{side}_stats"][extra] if extra else 0) for r in rounds)
                 for k, side, key, extra in (("bytes_a", "push", "bytes_up", "bytes_down"),
                                             ("bytes_b", "pull", "bytes_down", "bytes_up"),
                                             ("ops_up", "push", "operations", ""),
                                             ("ops_down", "pull", "operations", ""))}
        out["targets"] += [
            _absolute(f"{store}: one edit, bytes moved by A (push: up + down)", worst["bytes_a"], EDIT_MAX_BYTES, "B"),
            _absolute(f"{store}: one edit, bytes moved by B (pull: up + down)", worst["bytes_b"], EDIT_MAX_BYTES, "B"),
            _absolute(f"{store}: one edit, object operations on A", worst["ops_up"], EDIT_MAX_OPERATIONS, "ops"),
            _absolute(f"{store}: one edit, object operations on B", worst["ops_down"], EDIT_MAX_OPERATIONS, "ops"),
        ]
        if store == "s3":
            for side in ("push", "pull"):
                requests = max(_api_total(r[f"{side}_api"]) or 0 for r in rounds)
                row = _absolute(f"s3: one edit, S3 requests on {'A' if side == 'push' else 'B'} (information)",
                                requests, EDIT_MAX_OPERATIONS, "req")
                row["information"] = True
                out["targets"].append(row)
    crdt, floor = out["cold"].get("crdtsync"), out["cold"].get("floor")
    if crdt and floor and floor.get("materialize_s"):
        with_rows = floor["total_s"] + floor["materialize_s"]
        out["targets"].append({
            "target": f"{store}: cold sync vs floor + storing the N rows in SQLite/FTS (information)",
            "value": crdt["total_s"], "unit": "s", "limit": f"<= {COLD_MAX_RATIO:g}x", "reference": with_rows,
            "ratio": crdt["total_s"] / with_rows,
            "verdict": "PASS" if crdt["total_s"] / with_rows <= COLD_MAX_RATIO else "MISS", "information": True,
        })
        out["targets"].append({
            "target": f"{store}: floor + storing the N rows alone vs floor, a lower bound of the cold sync "
                      "(information)",
            "value": with_rows, "unit": "s", "limit": f"<= {COLD_MAX_RATIO:g}x", "reference": floor["total_s"],
            "ratio": with_rows / floor["total_s"] if floor["total_s"] else None, "verdict": None,
            "information": True,
        })
    if crdt and floor:
        ratio = crdt["total_s"] / floor["total_s"] if floor["total_s"] else None
        out["targets"].append({
            "target": f"{store}: cold sync (first push + join) vs floor (put + get + open + apply)",
            "value": crdt["total_s"], "unit": "s", "limit": f"<= {COLD_MAX_RATIO:g}x floor",
            "reference": floor["total_s"], "ratio": ratio,
            "verdict": None if ratio is None else ("PASS" if ratio <= COLD_MAX_RATIO else "MISS"),
        })
    return out


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def _sync_row(r: Result) -> Result:
    """A measured sync or push (``push``, ``bridge``'s ``carry``, ``heal``) as a column of the bridge/heal table."""
    reports = r.get("reports") or ([r["report"]] if r.get("report") else [])
    return {"seconds": r["seconds"], "bytes_up": r["stats"]["bytes_up"], "bytes_down": r["stats"]["bytes_down"],
            "ops": r["stats"]["operations"], "api": r.get("api"), "rss_peak_mb": r.get("rss_peak_mb"),
            "objects_up": sum(x["up"]["objects"] for x in reports), "healed": sum(x["healed"] for x in reports),
            "errors": [e for x in reports for e in x["errors"]]}


def _join_row(j: Result, worker_peak_mb: float | None, memories: int | None) -> Result:
    """A measured join as a column of the joins table."""
    return {"status": j["status"], "error": j.get("error"), "seconds": j["seconds"],
            "bytes_down": j["stats"]["bytes_down"], "bytes_up": j["stats"]["bytes_up"],
            "ops": j["stats"]["operations"], "api": j.get("api"), "rss_peak_mb": j["rss_peak_mb"],
            "worker_peak_mb": worker_peak_mb, "memories": memories}


def summarize_relays(s: Result) -> Result:
    """The bridged chain and the healed relay beside the plain cold sync of the same run: A's first push, B's
    join through R1 (the ``push`` and ``join`` scenarios), with the ratios of time, bytes and operations."""
    out: Result = {"syncs": {}, "joins": {}}
    push, join, bridge, heal = s.get("push"), s.get("join"), s.get("bridge"), s.get("heal")
    if _ok(push):
        out["syncs"]["push"] = _sync_row(push)
    if _ok(join):
        out["joins"]["plain"] = _join_row(_joined(join), join.get("worker_peak_mb"), join.get("memories_on_b"))
        out["db_b"] = join.get("db")
    if _ok(bridge):
        out["syncs"]["carry"] = _sync_row(bridge["carry"])
        out["joins"]["bridged"] = _join_row(bridge["join_c"], bridge.get("worker_peak_mb"), bridge.get("memories_on_c"))
        out["memories_on_a"] = bridge["memories_on_a"]
        out["db_c"] = bridge.get("db_c")
    if _ok(heal):
        out["syncs"]["heal"] = {**_sync_row(heal), "lost": len(heal["lost"]), "lost_bytes": heal["lost_bytes"],
                                "objects_before": heal["objects_before"], "still_missing": heal["still_missing"],
                                "put_back": heal["put_back"], "lost_names": [f"{x['author']}/{x['name']}"
                                                                             for x in heal["lost"]],
                                "changed": heal["changed"]}
        out["heal_rounds"] = [{**_sync_row(r), "seed": r["seed"], "lost": [f"{x['author']}/{x['name']}" for x in
                                                                         r["lost"]],
                               "lost_bytes": r["lost_bytes"], "put_back": r["put_back"],
                               "still_missing": r["still_missing"]} for r in heal.get("rounds", [])]
        out["joins"]["after_heal"] = _join_row(heal["join"], heal.get("worker_peak_mb"), heal.get("memories_on_d"))
        out.setdefault("memories_on_a", heal["memories_on_a"])
    base_sync, base_join = out["syncs"].get("push"), out["joins"].get("plain")
    for rows, base in ((out["syncs"], base_sync), (out["joins"], base_join)):
        for row in rows.values():
            if base is not None:
                row["ratios"] = {k: _ratio(row[k], base[k]) for k in ("seconds", "bytes_up", "bytes_down", "ops")}
    return out


def _absolute(what: str, value: float, limit: float, unit: str) -> Result:
    """A target row with an absolute limit (bytes are shown in KiB)."""
    shown = f"< {limit / 1024:g} KiB" if unit == "B" else f"< {limit:g} {unit}"
    return {"target": what, "value": value, "unit": unit, "limit": shown, "reference": limit,
            "ratio": value / limit, "verdict": "PASS" if value < limit else "MISS"}


# -- tables ------------------------------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    """Seconds as s or ms."""
    if value is None:
        return "-"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def fmt_b(value: float | None) -> str:
    """Bytes as B, KiB or MiB."""
    if value is None:
        return "-"
    if value < 10 * 1024:
        return f"{value:,.0f} B"
    if value < 10 * 2**20:
        return f"{value / 1024:,.1f} KiB"
    return f"{value / 2**20:,.1f} MiB"


def fmt_api(api: dict[str, int] | None) -> str:
    """S3 requests as ``total (Op n, ...)``."""
    if not api:
        return "-"
    short = {"ListObjectsV2": "LIST", "GetObject": "GET", "HeadObject": "HEAD", "PutObject": "PUT",
             "DeleteObject": "DEL"}
    parts = ", ".join(f"{short.get(k, k)} {v:,}" for k, v in sorted(api.items()))
    return f"{sum(api.values()):,} ({parts})"


def fmt_value(value: float | None, unit: str) -> str:
    """A target's value in its unit."""
    if value is None:
        return "-"
    return {"s": fmt_s, "B": fmt_b}.get(unit, lambda v: f"{v:,.0f} {unit}")(value)


def report_tables(r: Result, console: Any) -> None:
    """Print the results as rich tables on ``console``."""
    from rich.table import Table

    p, m = r["params"], r["machine"]
    console.print(f"[bold]crdtsync mailbox benchmark[/bold]: {p['n']:,} memories, stores {', '.join(p['stores'])};"
                  f" {m['date']}, {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, pycrdt {m.get('pycrdt')},"
                  f" moto {m.get('moto')}, s3fs {m.get('s3fs')}, crdtsync {m['commit']}")
    template = r["scenarios"].get("template", {})
    for store, scen in [("", {"template": template}), *r["scenarios"].get("stores", {}).items()]:
        for name, value in scen.items():
            if isinstance(value, dict) and "error" in value:
                console.print(f"[red]{store or 'setup'} {name} failed:[/red] {value['error']}")
            if isinstance(value, dict) and value.get("unwrapped"):
                console.print(f"[yellow]{store} {name}: not found in this crdtsync, not timed:[/yellow] "
                              f"{', '.join(value['unwrapped'])}")
    if _ok(template):
        console.print(f"device A's vault: {template['added']:,} memories imported in {fmt_s(template['import_s'])}"
                      f" (untimed for the targets), vault folder {template['vault_mb']:.0f} MiB")
    for store, summary in r["summary"].items():
        s = r["scenarios"]["stores"][store]
        s3 = store == "s3"
        naive_label = "naive: one object per memory"
        if summary.get("naive_factor", 1.0) != 1.0:
            naive_label += f" (measured at {summary['naive_n']:,}, x{summary['naive_factor']:.0f} extrapolated)"
        cold = summary["cold"]
        t = Table(title=f"{store}: Cold sync to a new device, {p['n']:,} memories")
        t.add_column("")
        for col in ("crdtsync", "floor: one encrypted file", naive_label):
            t.add_column(col, justify="right")
        c, f, nv = cold.get("crdtsync", {}), cold.get("floor", {}), cold.get("naive", {})
        t.add_row("up (A): time", f"{fmt_s(c.get('up_s'))} (add_relay + sync)", f"{fmt_s(f.get('up_s'))} (put)",
                  f"{fmt_s(nv.get('up_s'))} (seal + puts)")
        t.add_row("down (B): time", f"{fmt_s(c.get('down_s'))} (join)",
                  f"{fmt_s(f.get('down_s'))} (get + open + apply)", f"{fmt_s(nv.get('down_s'))} (list + gets + open)")
        t.add_row("[bold]total[/bold]", *(fmt_s(x.get("total_s")) for x in (c, f, nv)))
        t.add_row("bytes up / down", *(f"{fmt_b(x.get('bytes_up'))} / {fmt_b(x.get('bytes_down'))}"
                                       for x in (c, f, nv)))
        t.add_row("store operations on A / on B", *(f"{x.get('ops_up', '-')} / {x.get('ops_down', '-')}"
                                                    for x in (c, f, nv)))
        if s3:
            t.add_row("S3 requests on A", *(fmt_api(x.get("api_up")) for x in (c, f, nv)))
            t.add_row("S3 requests on B", *(fmt_api(x.get("api_down")) for x in (c, f, nv)))
        t.add_row("not in the total", "", f"{fmt_s(f.get('extra_up_s'))} (load Doc + encode + seal on A)", "")
        t.add_row("information", "", f"+ {fmt_s(f.get('materialize_s'))}: the {p['n']:,} rows into SQLite + "
                  "FTS (Store.put_rows)", "")
        console.print(t)
        if c.get("note"):
            console.print(f"[yellow]{c['note']}[/yellow]")

        ed = summary["edit"]
        t = Table(title=f"{store}: One edit among {p['n']:,} memories (A pushes, B pulls)")
        t.add_column("")
        cols = [("crdtsync_cold", "crdtsync, round 1 (fresh Vault objects)"),
                ("crdtsync_warm", "crdtsync, warm (median of later rounds)"),
                ("floor", "floor: re-upload the whole file"), ("naive", naive_label.replace("naive: ", "naive: "))]
        for _, col in cols:
            t.add_column(col, justify="right")
        rows = [ed.get(k, {}) for k, _ in cols]
        t.add_row("push (A): time", *(fmt_s(x.get("up_s")) for x in rows))
        t.add_row("pull (B): time", *(fmt_s(x.get("down_s")) for x in rows))
        t.add_row("bytes up (A) / down (B)", *(f"{fmt_b(x.get('bytes_up'))} / {fmt_b(x.get('bytes_down'))}"
                                               for x in rows))
        t.add_row("bytes moved per device, A / B (up + down)",
                  *(f"{fmt_b(x.get('bytes_a', x.get('bytes_up')))} / {fmt_b(x.get('bytes_b', x.get('bytes_down')))}"
                    for x in rows))
        t.add_row("store operations A / B", *(f"{x.get('ops_up', '-')} / {x.get('ops_down', '-')}" for x in rows))
        if s3:
            t.add_row("S3 requests A", *(fmt_api(x.get("api_up")) for x in rows))
            t.add_row("S3 requests B", *(fmt_api(x.get("api_down")) for x in rows))
        t.add_row("B converged", *(str(x.get("converged", "")) for x in rows))
        console.print(t)

        _relay_tables(store, summary.get("relays") or {}, s, console)

        if _ok(s.get("join")):
            join = s["join"]
            j = _joined(join)
            console.print(harness.breakdown_table(
                f"{store}: Where B's join goes (wrapped calls; nested rows are part of the row above)",
                j["breakdown"], fmt_s, total=("[bold]join, end to end[/bold]", j["seconds"]), hide_uncalled=True))
            if j is not join["default"]:
                console.print(f"[yellow]with the default deadline the join {join['default']['status']} after "
                              f"{fmt_s(join['default']['seconds'])}: {join['default'].get('error', '')}[/yellow]")
            console.print(f"B after the join: {join['memories_on_b']}; peak RSS of the join process "
                          f"{j['rss_peak_mb']:.0f} MiB, largest integration worker {join['worker_peak_mb']:.0f} MiB")
        if _ok(s.get("push")):
            push = s["push"]
            console.print(harness.breakdown_table(
                f"{store}: Where A's first push goes (add_relay + sync)", push["breakdown"], fmt_s,
                total=("[bold]add_relay + sync, end to end[/bold]", push["seconds"]), hide_uncalled=True))
        if _ok(s.get("edit")):
            rounds = s["edit"]["rounds"]
            t = Table(title=f"{store}: One edit: where the time goes on each side, per round")
            t.add_column("part")
            for i in range(len(rounds)):
                t.add_column(f"round {i + 1}{' (cold)' if i == 0 else ''}", justify="right")
            t.add_row("A: edit (Vault.update, not in the push)", *(fmt_s(x["edit_s"]) for x in rounds))
            t.add_row("A: sync(pull=False)", *(fmt_s(x["push_s"]) for x in rounds))
            for label in rounds[0]["push_breakdown"]:
                if any(x["push_breakdown"][label]["calls"] for x in rounds):
                    t.add_row(f"  {label}", *(fmt_s(x["push_breakdown"][label]["s"]) for x in rounds))
            t.add_row("B: sync(push=False)", *(fmt_s(x["pull_s"]) for x in rounds))
            for label in rounds[0]["pull_breakdown"]:
                if any(x["pull_breakdown"][label]["calls"] for x in rounds):
                    t.add_row(f"  {label}", *(fmt_s(x["pull_breakdown"][label]["s"]) for x in rounds))
            console.print(t)

    target_rows = (row for summary in r["summary"].values() for row in summary["targets"])
    console.print(harness.targets_table(target_rows, fmt_value))
    console.print(f"corpus {r['corpus']['records']:,} records (JSONL {r['corpus']['jsonl_mb']:.1f} MiB); whole run "
                  f"{r['wall_s']:.0f} s; load average (1/5/15 min) at start {harness.format_loads(r, 'start', '')},"
                  f" at end {harness.format_loads(r, 'end', '')} on {m['cpus']} CPUs")


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _relay_tables(store: str, rel: Result, s: Result, console: Any) -> None:
    """The bridged chain and the healed relay, beside A's first push and B's plain join (same run)."""
    from rich.table import Table

    syncs, joins = rel.get("syncs", {}), rel.get("joins", {})
    s3 = store == "s3"
    if set(syncs) - {"push"}:
        cols = [(k, label) for k, label in (
            ("push", "A's first push into R1 (push)"),
            ("carry", "B: add_relay R2 + sync, carries A's entries into R2 (bridge)"),
            ("heal", "A's next sync, R1 lost 10% of a/ (heal, first seed)")) if k in syncs]
        t = Table(title=f"{store}: A bridged chain and a healed relay, beside A's first push (same run)")
        t.add_column("")
        for _, label in cols:
            t.add_column(label, justify="right")
        rows = [syncs[k] for k, _ in cols]
        t.add_row("time", *(fmt_s(x["seconds"]) for x in rows))
        t.add_row("bytes up / down", *(f"{fmt_b(x['bytes_up'])} / {fmt_b(x['bytes_down'])}" for x in rows))
        t.add_row("store operations", *(f"{x['ops']:,}" for x in rows))
        if s3:
            t.add_row("S3 requests", *(fmt_api(x["api"]) for x in rows))
        t.add_row("objects put / of which healed", *(f"{x['objects_up']} / {x['healed']}" for x in rows))
        t.add_row("peak RSS", *(f"{x['rss_peak_mb']:.0f} MiB" if x.get("rss_peak_mb") else "-" for x in rows))
        for key, label in (("seconds", "time"), ("bytes_up", "bytes up"), ("ops", "operations")):
            t.add_row(f"{label} vs A's first push", *(_x(x.get("ratios", {}).get(key)) for x in rows))
        console.print(t)
        heal = syncs.get("heal")
        if heal:
            console.print(f"heal: {heal['lost']} of the {heal['objects_before']} objects under a/ deleted "
                          f"({fmt_b(heal['lost_bytes'])}: {', '.join(heal['lost_names'])}); in the relay again after "
                          f"A's sync: {heal['put_back']}; still missing: "
                          f"{', '.join(heal['still_missing']) or 'none'}; rewritten with another size: "
                          f"{', '.join(heal['changed']) or 'none'}")
        rounds = rel.get("heal_rounds") or []
        if len(rounds) > 1:
            t = Table(title=f"{store}: heal, one round per seed: 10% of a/ lost, then A's next sync")
            for col in ("seed", "objects lost (author/name)", "bytes lost", "time", "bytes up", "operations",
                        "put / healed", "in the relay again"):
                t.add_column(col, justify="left" if col.startswith("objects") else "right")
            for x in rounds:
                t.add_row(str(x["seed"]), ", ".join(x["lost"]), fmt_b(x["lost_bytes"]), fmt_s(x["seconds"]),
                          fmt_b(x["bytes_up"]), str(x["ops"]), f"{x['objects_up']} / {x['healed']}",
                          f"{x['put_back']} of {len(x['lost'])}")
            console.print(t)
        for x, label in ((syncs.get("carry"), "bridge: B's sync"), (heal, "heal: A's sync")):
            if x and x["errors"]:
                console.print(f"[red]{label} reported errors:[/red] {x['errors']}")
    if set(joins) - {"plain"}:
        cols = [(k, label) for k, label in (
            ("plain", "B joins through R1 (join)"), ("bridged", "C joins through R2, all carried by B (bridge)"),
            ("after_heal", "D joins through R1 after the heal (heal)")) if k in joins]
        t = Table(title=f"{store}: Joins: plain, through the bridged relay, after the heal (same run)")
        t.add_column("")
        for _, label in cols:
            t.add_column(label, justify="right")
        rows = [joins[k] for k, _ in cols]
        t.add_row("status", *(x["status"] for x in rows))
        t.add_row("time", *(fmt_s(x["seconds"]) for x in rows))
        t.add_row("bytes down / up", *(f"{fmt_b(x['bytes_down'])} / {fmt_b(x['bytes_up'])}" for x in rows))
        t.add_row("store operations", *(f"{x['ops']:,}" for x in rows))
        if s3:
            t.add_row("S3 requests", *(fmt_api(x["api"]) for x in rows))
        t.add_row("peak RSS: join process / largest worker",
                  *(f"{x['rss_peak_mb']:.0f} / {x['worker_peak_mb']:.0f} MiB" if x.get("worker_peak_mb")
                    else f"{x['rss_peak_mb']:.0f} MiB / -" for x in rows))
        on_a = rel.get("memories_on_a")
        t.add_row("memories (status counts) vs A's",
                  *("-" if not x.get("memories") else f"{x['memories']['live']:,} live, " + (
                      "same as A" if x["memories"] == on_a else f"A: {on_a}, here: {x['memories']}") for x in rows))
        for key, label in (("seconds", "time"), ("bytes_down", "bytes down"), ("ops", "operations")):
            t.add_row(f"{label} vs B's plain join", *(_x(x.get("ratios", {}).get(key)) for x in rows))
        console.print(t)
        for x in rows:
            if x.get("error"):
                console.print(f"[red]{store}: a join failed:[/red] {x['status']}: {x['error']}")
    for name, label, part in (("bridge", "B's add_relay R2 + sync (bridge)", "carry"),
                              ("heal", "A's healing sync (heal)", None)):
        if _ok(s.get(name)):
            r = s[name][part] if part else s[name]
            console.print(harness.breakdown_table(f"{store}: Where {label} goes", r["breakdown"], fmt_s,
                                                  total=("[bold]end to end[/bold]", r["seconds"]),
                                                  hide_uncalled=True))
    for key, who in (("db_b", "B's vault.db after the join"), ("db_c", "C's vault.db after the bridged join")):
        db = rel.get(key)
        if db:
            total = db["file_bytes"] + db["wal_bytes"]
            entries = db["tables"].get("entries", 0)
            console.print(f"{who}: {fmt_b(total)} (WAL {fmt_b(db['wal_bytes'])}); table entries "
                          f"{fmt_b(entries)} ({entries / total:.0%}; its parts {fmt_b(db['entries_parts_bytes'])} in "
                          f"{db['entries_rows']} entries); largest: " + ", ".join(
                              f"{name} {fmt_b(size)}" for name, size in list(db["tables"].items())[:5]))


# -- entry point -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = harness.make_parser(__doc__, SCENARIOS, default_timeout=DEFAULT_TIMEOUT,
                                 skip_help="comma-separated scenarios to leave out (naive_push,...)")
    parser.add_argument("--stores", default="folder,s3", help="comma-separated: folder, s3 (default both)")
    parser.add_argument("--naive-n", type=int, default=DEFAULT_NAIVE_N_S3,
                        help=f"memories of the naive layout on S3 (default {DEFAULT_NAIVE_N_S3}; "
                             "extrapolated linearly to N)")
    parser.add_argument("--naive-n-folder", type=int, default=None,
                        help="memories of the naive layout on the folder store (default N)")
    parser.add_argument("--edit-rounds", type=int, default=4, help="one-edit rounds (round 1 is cold)")
    parser.add_argument("--apply-deadline", type=float, default=600.0,
                        help="worker deadline of a second B when the default one refuses the join")
    args = parser.parse_args(argv)
    profiled = harness.names(args.profile_scenarios)

    if args.scenario:
        run_here(args.scenario, args.workdir, json.loads(args.params), args.scenario in profiled)
        return 0

    console = harness.make_console(args.json, 150)
    stores = [s for s in args.stores.split(",") if s]
    skipped = harness.names(args.skip)
    unknown = (set(stores) - set(STORES)) | ((skipped | profiled) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown stores or scenarios: {', '.join(sorted(unknown))}")
    with harness.work_folder("crdtsync-mailbox-bench-", args.tmp, args.keep, console) as work:
        started = time.perf_counter()
        params: Result = {"n": args.n, "stores": stores, "edit_rounds": max(1, args.edit_rounds),
                          "apply_deadline": args.apply_deadline, "work": str(work)}
        results: Result = {"params": params, "machine": _machine(), "scenarios": {"stores": {}},
                           "load_average": {}, "summary": {}}
        harness.record_load(results, "start")
        server = None
        try:
            console.print(f"building the corpus ({args.n:,} memories) in {work} ...")
            results["corpus"] = prepare(work, args.n, params["edit_rounds"])
            if "s3" in stores:
                server = start_moto()
                console.print(f"moto S3 server on {os.environ['AWS_ENDPOINT_URL']}, bucket {BUCKET}")
            console.print("importing device A's vault (untimed) ...")
            results["scenarios"]["template"] = child("template", work, params, timeout=args.timeout,
                                                     profile="template" in profiled)
            if "error" in results["scenarios"]["template"]:
                raise RuntimeError(f"the template vault failed: {results['scenarios']['template']['error']}")
            for store in stores:
                naive_n = args.naive_n if store == "s3" else (args.naive_n_folder or args.n)
                store_params = {**params, "store": store, "naive_n": max(1, min(naive_n, args.n))}
                shutil.copytree(work / "template", work / store / "A")
                scen: Result = {}
                results["scenarios"]["stores"][store] = scen
                for name in ORDER:
                    if name in skipped:
                        continue
                    console.print(f"{store}: running {name} ...")
                    scen[name] = child(name, work, store_params, timeout=args.timeout, profile=name in profiled)
                    if "error" in scen[name]:
                        console.print(f"[red]{store}: {name} failed[/red]: {scen[name]['error']}")
                results["summary"][store] = summarize(store, scen, {**params, "naive_n": store_params["naive_n"]})
                results["summary"][store]["relays"] = summarize_relays(scen)
            results["wall_s"] = time.perf_counter() - started
            harness.record_load(results, "end")
            report_tables(results, console)
            harness.print_profiles(console, ((f"{store}: {name}", result)
                                     for store, scen in results["scenarios"]["stores"].items()
                                     for name, result in scen.items()))
            if args.json:
                print(json.dumps(results, indent=2, default=str))
        finally:
            if server is not None:
                server.stop()
    failed = any(isinstance(v, dict) and "error" in v for scen in results["scenarios"]["stores"].values()
                 for v in scen.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
