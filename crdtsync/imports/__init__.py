"""Import and export of memory files: several formats in, plain :class:`ImportRecord` values out, JSONL back.

This layer only reads and writes files (no pycrdt, no SQLite). Every record is checked with the validators of
:mod:`crdtsync.model.records`; one that fails becomes an :class:`ImportProblem`, never an exception.

Formats (the names :func:`detect_format` returns):

``jsonl``
    One object per line, ``{content, category?, tags?, created?, source?, metadata?, level?, id?}``: what
    :func:`export_jsonl` writes. When ``content`` is absent, ``text`` or ``memory`` stands for it (ad-hoc
    dumps and mem0 items use them); ``created_at`` likewise for ``created``. Other keys (``updated``,
    ``created_by``...) are ignored: the vault stamps its own. Plain or gzip-compressed (``.jsonl.gz``).
``json-array``
    A JSON array of such objects (a lone object counts as an array of one).
``mem0``
    mem0's ``Memory.get_all()`` result ``{"results": [{id, memory, hash, metadata, categories?, created_at,
    updated_at, user_id?, agent_id?, run_id?, actor_id?, role?}]}`` (mem0ai/mem0 mem0/memory/main.py,
    docs.mem0.ai "Get all memories"), or the bare list older versions return. category = first category,
    tags = all, source = ``"mem0:<id>"``, metadata + ``{"mem0": {hash, user_id, agent_id, updated_at...}}``.
``openmemory``
    OpenMemory's backup, ``POST /api/v1/backup/export`` in mem0ai/mem0 openmemory/api/app/routers/backup.py:
    a zip of ``memories.json`` (``{user, apps, categories, memories: [{id, app_id, content, metadata, state,
    created_at, updated_at, category_ids, ...}], ...}``) and ``memories.jsonl.gz`` (per line ``{id, content,
    metadata, created_at, updated_at, state, app, categories}``). The zip (its JSONL member preferred), either
    member alone or an uncompressed ``memories.jsonl`` is read. States are ``active|paused|archived|deleted``
    (openmemory/api/app/models.py): ``deleted`` and ``archived`` memories are skipped, as the user took them
    out of use and an import must not bring them back; ``paused`` ones are still the user's and imported.
    Mapped as mem0: source ``"openmemory:<id>"``, metadata + ``{"openmemory": {state, app, updated_at}}``.
``memory-files``
    A folder of JSON files, one memory each, ``{timestamp, device_id, category, content, context}`` (the Ghost
    design), walked recursively in sorted order; or one such file. created = timestamp, source =
    ``"file:<path relative to the folder>"``, metadata = ``{device_id, context}``.
``locomo``
    LoCoMo conversation files (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM
    Agents", ACL 2024; snap-research/locomo), one file or a folder: one memory per dialogue turn, content =
    text, category = speaker, created = its session's date (UTC), source = ``"26.json#D1:3"``, tags
    ``{"locomo"}``, metadata ``{session, dia_id, blip_caption?, img_url?}``.

Reads are bounded, so that an endless or huge input ends with ``IMPORT_TOO_LARGE`` instead of taking the
machine's memory: a JSONL line up to :data:`MAX_LINE_BYTES` (4 MiB; a longer one is a problem and the rest of
its file is not read), a whole JSON document (a zip member decompressed, a file of a folder) up to
:data:`MAX_DOCUMENT_BYTES` (64 MiB), and :func:`spool`, which copies standard input or a pipe to a file for
:func:`read_import` (it reads its input twice and takes only files and folders), up to
:data:`MAX_STREAM_BYTES` (1 GiB).

Modules: ``_record`` (the record types, :func:`stable_id`, field validation), ``_files`` (reading JSON, JSONL,
folders and zips), ``_formats`` (one mapper and reader per format), ``_detect`` (:func:`detect_format`,
:func:`read_import`, :func:`count_hint`) and ``_export`` (:func:`export_jsonl`).
"""

from crdtsync.imports._detect import count_hint, detect_format, read_import
from crdtsync.imports._export import export_jsonl
from crdtsync.imports._files import MAX_DOCUMENT_BYTES, MAX_LINE_BYTES, MAX_STREAM_BYTES, spool
from crdtsync.imports._record import FORMATS, IMPORT_NAMESPACE, ImportProblem, ImportRecord, Item, stable_id

__all__ = [
    "FORMATS",
    "IMPORT_NAMESPACE",
    "MAX_DOCUMENT_BYTES",
    "MAX_LINE_BYTES",
    "MAX_STREAM_BYTES",
    "ImportProblem",
    "ImportRecord",
    "Item",
    "count_hint",
    "detect_format",
    "export_jsonl",
    "read_import",
    "spool",
    "stable_id",
]
