"""LAN benchmark: cold sync of an N-memory vault between two devices over TCP, and one edit's latency from its
commit on one device to its commit on a connected peer, against the folder mailbox and two floors.

Not a test: it prints tables of measurements and of the issue's targets (value, limit, ratio, PASS/MISS) and,
with ``--json``, a JSON summary on stdout instead. Nothing here asserts a time.

Needs root: the two devices are hosts of a LAN of network namespaces (``tests/netns.py``: a switch namespace and
one namespace per host, joined by veth cables; nothing of it touches this machine's real interfaces, and it is
removed at the end). Every process that talks on the LAN runs inside its host's namespace.

Setup (untimed, one child process, ``template``): device A is created (crdtsync's default Argon2id), publishes the
vault to a folder relay, device B joins through it while A's vault is still empty, A takes B's registration, then
A imports the corpus (LoCoMo repeated to N memories, ``bench/_corpus.py``). So B is a registered device of the
vault holding nothing of the corpus. Each scenario below starts from its own copy of these two vault folders.

``rtt``
    Bare TCP round trip between the two hosts: a Python echo server on B's host, a client on A's
    (``TCP_NODELAY``), 1-byte ping-pongs: 100 to warm up, then :data:`RTT_COUNT` timed.
``floor``
    The floor: A's whole Doc as the same encrypted snapshot bytes as ``bench/mailbox.py``'s floor (``encode_update()``
    split and sealed with crdtsync's envelope, one msgpack array), sent over one plain TCP connection from A's host
    to a receiver on B's host that opens the envelopes and applies the update to a fresh ``pycrdt.Doc``. Timed
    from before the encode (A's vault already open, its Doc not loaded: ``encode_update`` loads it, as the daemon
    does when it first commits) to the end of the apply, on the shared monotonic clock.
``lan_cold``
    A runs ``crdtsync serve --interface A --port 0 --relay-interval 0 --no-discovery`` (listening before the clock
    starts; its peak RSS mark reset then); B runs ``crdtsync sync --lan --peer A:PORT --timeout 0.1 --json``, a
    one-shot round, timed from its spawn to its exit (interpreter start and vault open included). Bytes each way:
    the counters of A's cable (``eth0``) before and after. Peak RSS: B's process tree (its own and its integration
    worker's, polled from ``/proc`` and taken from ``wait4``), A's daemon (``VmHWM`` after the round).
``edit_cli`` (the target) and ``edit_inproc``
    Both daemons running and connected (B's ``serve --peer A:PORT``). A watcher process on B's host polls B's
    ``vault.db`` read-only (``PRAGMA data_version`` every :data:`WATCH_POLL` s, then the edited row of the ``memories``
    table) and notes when each edit is committed there. ``edit_cli``: a driver process on A's host opens A's vault
    beside A's daemon and makes one warm-up edit, waits until B has it, then :data:`EDITS` edits (``Vault.update`` of
    one memory's content each), spaced by a random 100 to 200 ms (seeded) so that each is measured alone and the
    daemon's polling phase is uniform; the time of each is the instant its transaction committed
    (``Replica.local_write`` calls ``_maybe_compact`` right after it; a compaction there runs after that instant). A's
    daemon notices another process's commit when it pokes the daemon's socket in the vault folder, so this is
    what a CLI or MCP write pays. ``edit_inproc``: the same, but the driver runs A's ``LanNode`` itself (in place of
    ``crdtsync serve``) and calls ``node.changes.notify()`` right after each write: what a write in the daemon's own
    process pays; B's node is run by this script too (``--role node``: the same ``LanNode`` and options as ``serve``),
    so that both sides time their parts (:func:`live_stopwatch`) and count what their sessions send
    (:func:`frame_tally`). Latency = the watcher's time - the driver's time (one ``CLOCK_MONOTONIC`` for every
    namespace); bytes per edit: the counters of A's cable read by the driver before each edit (each edit alone in its
    interval: TLS records, TCP/IP headers and acks both ways included).
``folder_cold``
    The folder mailbox between the same two devices: A's ``crdtsync sync`` (its first push of the corpus to the
    folder relay), then B's ``crdtsync sync`` (the pull), each timed from spawn to exit like B's ``sync --lan``.
``join``
    For reference: ``bench/mailbox.py``'s own ``join`` scenario (a fresh device joins through that relay, in one
    process: Argon2id, pull, integrate, registration push), the figure that benchmark quotes.

Run from the repository root, as root::

    .venv/bin/python bench/lan.py                       # N = 100,000
    .venv/bin/python bench/lan.py --n 5000 --json > lan.json
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _harness as harness  # noqa: E402
from bench._corpus import repeated  # noqa: E402
from bench._harness import Result, Stopwatch, memory_mb, reset_peak, timed, wrap_any  # noqa: E402

#: The same passphrase as ``bench/mailbox.py`` (its ``join`` scenario runs on our relay).
PASSPHRASE = "crdtsync benchmark"
#: Seconds a scenario (or one of its processes) may take before it is killed and reported as failed.
DEFAULT_TIMEOUT = 900.0
#: Targets of the issue.
EDIT_MAX_BYTES = 2 * 1024
EDIT_MEDIAN_MAX_S = 0.010
EDIT_P99_MAX_S = 0.100
#: Measured edits per mode, and the pause between two (uniform in this range, seeded).
EDITS = 100
EDIT_SPACING = (0.10, 0.20)
EDIT_SEED = 20
#: Seconds between two polls of B's ``vault.db`` by the watcher.
WATCH_POLL = 0.0005
#: Bare TCP round trips timed (after 100 untimed).
RTT_COUNT = 1000
RTT_WARMUP = 100
ORDER = ("rtt", "floor", "lan_cold", "edit_cli", "edit_inproc", "folder_cold", "join")
CRDTSYNC = Path(sys.executable).parent / "crdtsync"
ROLES = ("rtt-server", "rtt-client", "floor-recv", "floor-send", "watch", "drive", "node")


# -- small helpers ----------------------------------------------------------------------------------------------


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a ``crdtsync`` process on the vault in ``home`` (this checkout first on the path; the
    work folder's state folder for incarnation tokens)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_") or k == "CRDTSYNC_STATE_DIR"}
    env.update(CRDTSYNC_HOME=str(home), CRDTSYNC_PASSPHRASE=PASSPHRASE,
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def counters(ns: str, iface: str = "eth0") -> dict[str, int]:
    """Bytes received and sent by ``iface`` of namespace ``ns`` so far (``ip -j -s``)."""
    out = subprocess.run(["ip", "-j", "-s", "-n", ns, "link", "show", iface], check=True, capture_output=True,
                         text=True, timeout=10).stdout
    stats = json.loads(out)[0]["stats64"]
    return {"rx": int(stats["rx"]["bytes"]), "tx": int(stats["tx"]["bytes"]),
            "rx_packets": int(stats["rx"]["packets"]), "tx_packets": int(stats["tx"]["packets"])}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def own_counters(iface: str = "eth0") -> tuple[int, int]:
    """(rx, tx) bytes of ``iface`` as this process's namespace sees it (``ip netns exec`` mounts its sysfs)."""
    base = Path("/sys/class/net") / iface / "statistics"
    return int((base / "rx_bytes").read_text()), int((base / "tx_bytes").read_text())


def status_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process in KiB (empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM") if k in fields}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/PID/task/*/children``)."""
    found, todo = [], [pid]
    while todo and len(found) < 1000:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def reset_hwm(pid: int) -> float:
    """Reset another process's peak-RSS mark (``clear_refs`` = 5, root); its current RSS in MiB."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kib(pid).get("VmRSS", 0) / 1024


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear between order statistics (inclusive method)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def live_memories(folder: Path) -> int:
    """Live memories in a vault's materialized table (read-only, untimed)."""
    conn = sqlite3.connect(f"file:{folder / 'vault.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM memories WHERE deleted = 0").fetchone()[0])
    finally:
        conn.close()


class Proc:
    """A process (in a namespace when ``host`` is given) whose stdout and stderr lines are collected by threads;
    :meth:`wait_for` a line, :meth:`send` a line to its stdin, :meth:`reap` it with its rusage."""

    def __init__(self, argv: list[str], *, host: Any = None, env: dict[str, str] | None = None,
                 name: str = "") -> None:
        self.name = name or Path(argv[0]).name
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._new: queue.Queue[None] = queue.Queue()
        kw: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "stdin": subprocess.PIPE,
                              "env": env, "cwd": ROOT}
        self.started = time.perf_counter()
        self.proc: subprocess.Popen[bytes] = host.popen(argv, **kw) if host is not None else \
            subprocess.Popen(argv, start_new_session=True, **kw)
        self.pid = self.proc.pid
        self.rusage: Any = None
        self.seconds: float | None = None
        for stream in ("stdout", "stderr"):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: str) -> None:
        pipe: IO[bytes] = getattr(self.proc, stream)
        for raw in pipe:
            self.lines[stream].append(raw.decode(errors="replace").rstrip("\n"))
            self._new.put(None)

    def wait_for(self, pattern: str, *, stream: str = "stderr", timeout: float = 60.0) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern``, waiting for it at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines[stream]):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None:
                time.sleep(0.2)
                if not any(re.search(pattern, line) for line in self.lines[stream]):
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {pattern!r}: "
                                       + self.tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {pattern!r} from {self.name} within {timeout:g} s: " + self.tail())
            with contextlib.suppress(queue.Empty):
                self._new.get(timeout=0.05)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def tail(self, count: int = 8) -> str:
        return " | ".join((self.lines["stderr"] + self.lines["stdout"])[-count:])

    def reap(self, timeout: float, on_poll: Callable[[], None] | None = None) -> int:
        """Wait for the exit (``wait4``, polled every millisecond, ``on_poll`` called every 50 ms); sets
        :attr:`seconds` (from the spawn) and :attr:`rusage`. Kills it after ``timeout`` seconds (then raises)."""
        deadline = time.monotonic() + timeout
        next_poll = 0.0
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.seconds = time.perf_counter() - self.started
                self.rusage = rusage
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode
            now = time.monotonic()
            if on_poll is not None and now >= next_poll:
                on_poll()
                next_poll = now + 0.05
            if now > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, 9)
                self.proc.wait(timeout=10)
                raise RuntimeError(f"{self.name} did not finish within {timeout:g} s: " + self.tail())
            time.sleep(0.001)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait (SIGKILL to its group after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, 9)
                self.proc.wait(timeout=10)
        return self.proc.returncode


class TreePeak:
    """Largest ``VmHWM`` seen per process of a tree, polled (call :meth:`poll` often; the last poll before an exit
    may miss a late rise, ``wait4``'s ``ru_maxrss`` covers the whole tree's largest)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, int] = {}

    def poll(self) -> None:
        for p in process_tree(self.pid):
            hwm = status_kib(p).get("VmHWM")
            if hwm:
                self.peaks[p] = max(self.peaks.get(p, 0), hwm)

    def mib(self) -> dict[str, float]:
        """``{"process": own peak, "children": largest descendant's peak}`` in MiB."""
        own = self.peaks.get(self.pid, 0) / 1024
        others = [v for p, v in self.peaks.items() if p != self.pid]
        return {"process": own, "children": max(others, default=0) / 1024}


# -- the untimed setup (a harness child) ---------------------------------------------------------------------------


def relay_url(work: Path) -> str:
    """The folder relay (where ``bench/mailbox.py``'s folder store keeps its mailbox, so its ``join`` runs on it)."""
    return (work / "folder-store" / "mailbox").as_uri()


def scenario_template(work: Path, params: Result) -> Result:
    """A created and published to the folder relay; B joins while A is empty; A takes B's registration; A
    imports the corpus (timed for information only)."""
    from crdtsync.vault import Vault

    a, b = work / "template" / "A", work / "template" / "B"
    out: Result = {}
    with timed(out, "setup_s"):
        Vault.init(a, name="bench", device_name="A", passphrase=PASSPHRASE)
        with Vault.open(a) as vault:
            vault.add_relay("box", relay_url(work))
            vault.sync()
        Vault.join(b, relay_url(work), passphrase=PASSPHRASE, device_name="B")
        with Vault.open(a) as vault:
            vault.sync()
            out["devices_on_a"] = len(vault.devices())
    with Vault.open(a) as vault:
        with timed(out, "import_s"):
            report = vault.import_path(work / "corpus.jsonl")
        out.update(added=report.added, skipped=report.skipped, problems=len(report.problems),
                   memories=vault.status()["memories"])
    out["vault_mb"] = harness.folder_mb(a)
    return out


# -- roles: small programs run inside a host's namespace (``--role``) ---------------------------------------------


def role_rtt_server(params: Result) -> Result:
    with socket.create_server((params["ip"], 0)) as server:
        print(f"port {server.getsockname()[1]}", flush=True)
        server.settimeout(60)
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(30)
            for _ in range(RTT_COUNT + RTT_WARMUP + 1):
                data = conn.recv(1)
                if not data:
                    break
                conn.sendall(data)
    return {}


def role_rtt_client(params: Result) -> Result:
    times: list[float] = []
    with socket.create_connection((params["ip"], params["port"]), timeout=30) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(RTT_COUNT + RTT_WARMUP):
            start = time.perf_counter()
            conn.sendall(b"x")
            if conn.recv(1) != b"x":
                raise RuntimeError("the echo server broke off")
            if index >= RTT_WARMUP:
                times.append(time.perf_counter() - start)
    return {"count": len(times), "median_s": statistics.median(times), "p99_s": quantile(times, 0.99),
            "min_s": min(times), "max_s": max(times)}


def role_floor_send(params: Result) -> Result:
    """A's side of the floor: encode A's Doc, seal it, send it over one TCP connection."""
    from bench.mailbox import _seal_body
    from crdtsync.vault import Vault

    out: Result = {}
    with Vault.open(Path(params["vault"])) as vault:
        secrets = vault.secrets
        print("ready", flush=True)
        sys.stdin.readline()
        out["t0"] = time.monotonic()
        full = vault.encode_update()
        out["t_encoded"] = time.monotonic()
        obj = _seal_body(secrets, full)
        out["t_sealed"] = time.monotonic()
        out["update_bytes"], out["object_bytes"] = len(full), len(obj)
        with socket.create_connection((params["ip"], params["port"]), timeout=120) as conn:
            out["t_connected"] = time.monotonic()
            conn.sendall(len(obj).to_bytes(8, "big"))
            conn.sendall(obj)
            out["t_sent"] = time.monotonic()
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # the receiver's "applied"
    return out


def role_floor_recv(params: Result) -> Result:
    """B's side of the floor: receive the object, open the envelopes, apply to a fresh Doc."""
    from pycrdt import Doc, Map

    from bench.mailbox import _open_object
    from crdtsync.store.keystore import load_secrets

    secrets = load_secrets(Path(params["vault"]))  # the floor's reader already holds the keys
    out: Result = {}
    with socket.create_server((params["ip"], 0)) as server:
        print(f"port {server.getsockname()[1]}", flush=True)
        server.settimeout(params["timeout"])
        conn, _ = server.accept()
        with conn:
            conn.settimeout(params["timeout"])
            base = reset_peak()
            head = b""
            while len(head) < 8:
                chunk = conn.recv(8 - len(head))
                if not chunk:
                    raise RuntimeError("the sender closed before the length")
                head += chunk
            out["t_first_byte"] = time.monotonic()
            size = int.from_bytes(head, "big")
            buf = bytearray(size)
            view, got = memoryview(buf), 0
            while got < size:
                n = conn.recv_into(view[got:], min(size - got, 1 << 20))
                if not n:
                    raise RuntimeError(f"the sender closed after {got} of {size} bytes")
                got += n
            out["t_received"] = time.monotonic()
            body = _open_object(secrets, bytes(buf))
            del buf, view
            out["t_opened"] = time.monotonic()
            doc: Doc[Any] = Doc()
            doc.apply_update(body)
            out["t_applied"] = time.monotonic()
            out["records"] = len(doc.get("memories", type=Map))
            out["rss_base_mb"], out["rss_peak_mb"] = base, memory_mb()["peak"]
            conn.sendall(b"k")
    return out


def role_watch(params: Result) -> Result:
    """On B's host: note when each expected edit is committed in B's ``vault.db`` (monotonic times)."""
    expected: list[list[str]] = params["expected"]  # [memory id, marker the content ends with]
    conn = sqlite3.connect(f"file:{Path(params['vault']) / 'vault.db'}?mode=ro", uri=True, isolation_level=None)
    seen_at: list[float | None] = [None] * len(expected)
    polls = changes = 0
    snapshots: list[list[float]] = []  # [time, id] each time B's newest Doc snapshot changed (a compaction)

    def newest_snapshot() -> int:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM snapshots").fetchone()[0])

    try:
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        snapshot = newest_snapshot()
        print("ready", flush=True)
        deadline = time.monotonic() + float(params["deadline_s"])
        index = 0
        while index < len(expected) and time.monotonic() < deadline:
            time.sleep(WATCH_POLL)
            polls += 1
            now_version = conn.execute("PRAGMA data_version").fetchone()[0]
            if now_version == version:
                continue
            now = time.monotonic()
            version = now_version
            changes += 1
            while index < len(expected):
                row = conn.execute("SELECT content FROM memories WHERE id = ?", (expected[index][0],)).fetchone()
                if row is None or not row[0].endswith(expected[index][1]):
                    break
                seen_at[index] = now
                if index == 0:
                    print("seen warm-up", flush=True)
                index += 1
            if newest_snapshot() != snapshot:
                snapshot = newest_snapshot()
                snapshots.append([now, snapshot])
    finally:
        conn.close()
    return {"seen_at": seen_at, "polls": polls, "changes": changes, "snapshots": snapshots}


def role_drive(params: Result) -> Result:
    """On A's host: a warm-up edit, then the timed edits (``Vault.update``), each time taken just after the write
    returned, with the cable's counters read before each. ``mode`` ``cli``: a process beside A's daemon; ``inproc``:
    this process runs A's ``LanNode`` and wakes its sessions after each write."""
    from crdtsync.vault import Vault

    edits: list[list[str]] = params["edits"]  # [memory id, marker]
    rng = random.Random(EDIT_SEED)
    pauses = [rng.uniform(*EDIT_SPACING) for _ in edits]
    out: Result = {"committed_at": [], "counters": [], "write_s": [], "after_commit_s": []}
    commits = _mark_commits()

    def write(vault: Vault, memory_id: str, marker: str) -> None:
        content = vault.get(memory_id).content + marker
        out["counters"].append(own_counters())
        commits.clear()
        start = time.monotonic()
        vault.update(memory_id, content=content)
        done = time.monotonic()
        committed = commits[0] if commits else done
        out["committed_at"].append(committed)
        out["write_s"].append(done - start)
        out["after_commit_s"].append(done - committed)

    with Vault.open(Path(params["vault"])) as vault:
        if params["mode"] == "cli":
            vault.get(edits[0][0])  # untimed: whatever opening costs
            print("ready", flush=True)
            sys.stdin.readline()
            for (memory_id, marker), pause in zip(edits, pauses, strict=True):
                write(vault, memory_id, marker)
                if marker == edits[0][1]:  # until B has the warm-up edit
                    sys.stdin.readline()
                    time.sleep(params["warmup_pause_s"])
                    print("measuring", flush=True)
                else:
                    time.sleep(pause)
            out["counters"].append(own_counters())
            return out
        watch, frames = live_stopwatch(), frame_tally()
        _drive_inproc(vault, params, edits, pauses, write, out, watch, frames)
        out["breakdown"], out["frames"] = watch.snapshot(), frames
        return out


def _drive_inproc(vault: Any, params: Result, edits: list[list[str]], pauses: list[float],
                  write: Callable[[Any, str, str], None], out: Result, watch: Stopwatch,
                  frames: dict[str, list[int]]) -> None:
    import anyio
    import anyio.to_thread

    from crdtsync.lan import LanNode, LanOptions

    node = LanNode(vault, LanOptions(interfaces=(params["ip"],), port=0, relay_interval=0.0))

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            ports = await tasks.start(node.serve)
            print(f"listening {ports[0]}", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            with anyio.fail_after(30):
                while not node.sessions:
                    await anyio.sleep(0.01)
            for memory_id, marker in edits:
                await node._call(write, vault, memory_id, marker)
                node.changes.notify()
                if marker == edits[0][1]:  # until B has the warm-up edit
                    await anyio.to_thread.run_sync(sys.stdin.readline)
                    await anyio.sleep(params["warmup_pause_s"])
                    watch.reset()  # the breakdown covers the measured edits
                    frames.clear()
                    print("measuring", flush=True)
                else:
                    await anyio.sleep(pauses[len(out["committed_at"]) - 1])
            out["counters"].append(own_counters())
            node.stop()

    anyio.run(main)


def role_node(params: Result) -> Result:
    """On B's host (``edit_inproc``): B's ``LanNode`` as ``crdtsync serve --no-discovery --relay-interval 0
    --peer A`` runs it, in a process of this script so that its parts are timed (:func:`live_stopwatch`). Its
    log goes to stderr; ``reset`` on stdin zeroes the timers, anything else (or EOF) stops it."""
    import anyio
    import anyio.to_thread

    from crdtsync.lan import LanNode, LanOptions
    from crdtsync.vault import Vault

    watch, frames = live_stopwatch(), frame_tally()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with Vault.open(Path(params["vault"])) as vault:
        node = LanNode(vault, LanOptions(interfaces=(params["ip"],), port=0, relay_interval=0.0,
                                         peers=((params["peer_ip"], params["peer_port"]),)), log=log)

        async def main() -> None:
            async with anyio.create_task_group() as tasks:
                await tasks.start(node.serve)
                while (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() == "reset":
                    watch.reset()
                    frames.clear()
                node.stop()

        anyio.run(main)
    return {"breakdown": watch.snapshot(), "frames": frames}


LIVE, LOGS = "crdtsync.live:LiveSync", "crdtsync.replication:AuthorLogReplica"


def live_stopwatch() -> Stopwatch:
    """Timers on the parts of the live path, the same on both sides (a side only calls some of them)."""
    watch = Stopwatch()
    wrap_any(watch, "write: Vault.update (A)", "crdtsync.vault:Vault.update")
    wrap_any(watch, "  of which _maybe_compact (after the commit)", "crdtsync.store.replica:Replica._maybe_compact")
    wrap_any(watch, "LiveSync.local_changes (after a write, or after taking entries)", f"{LIVE}.local_changes")
    wrap_any(watch, "  AuthorLogReplica.commit (next entry: read log, merge, seal, store)", f"{LOGS}.commit")
    wrap_any(watch, "    seal_entry", "crdtsync.replication:seal_entry")
    wrap_any(watch, "  AuthorLogReplica.renew_head (seal + store a head)", f"{LOGS}.renew_head")
    wrap_any(watch, "  LiveSync._send_lacking (plan + read entries)", f"{LIVE}._send_lacking")
    wrap_any(watch, "LiveSync.receive (what the peer sent)", f"{LIVE}.receive")
    wrap_any(watch, "  LiveSync._take (an entry)", f"{LIVE}._take")
    wrap_any(watch, "    AuthorLogReplica.accept (open, check, keep as received)", f"{LOGS}.accept")
    wrap_any(watch, "    AuthorLogReplica.integrate", f"{LOGS}.integrate")
    wrap_any(watch, "      strict reader (decode_update)", "crdtsync.store.integration:decode_update")
    wrap_any(watch, "      integration worker round trip (IntegrationWorker.apply)",
             "crdtsync.store.worker:IntegrationWorker.apply")
    wrap_any(watch, "    AuthorLogReplica.keep_heads", f"{LOGS}.keep_heads")
    wrap_any(watch, "  AuthorLogReplica.take_head", f"{LOGS}.take_head")
    wrap_any(watch, "  AuthorLogReplica.check_summary", f"{LOGS}.check_summary")
    wrap_any(watch, "AuthorLogReplica.summary (any caller)", f"{LOGS}.summary")
    return watch


def frame_tally() -> dict[str, list[int]]:
    """A dict that receives ``{message type: [count, bytes]}`` of every message this process's live sessions
    send (``Session.send`` wrapped: the frames' bytes before TLS); ``clear()`` it to start over."""
    from crdtsync.protocol.session import Session

    tally: dict[str, list[int]] = {}
    original = Session.send

    def counted(self: Any, message: Any) -> bytes:
        data: bytes = original(self, message)
        row = tally.setdefault(type(message).__name__, [0, 0])
        row[0] += 1
        row[1] += len(data)
        return data

    Session.send = counted  # type: ignore[method-assign]
    return tally


def _mark_commits() -> list[float]:
    """A list that receives the time a local write committed: ``Replica.local_write`` calls ``_maybe_compact``
    right after its transaction (the caller clears the list before each write)."""
    from crdtsync.store.replica import Replica

    marks: list[float] = []
    original = Replica._maybe_compact

    def marked(self: Any) -> None:
        marks.append(time.monotonic())
        original(self)

    Replica._maybe_compact = marked  # type: ignore[method-assign]
    return marks


ROLE_FUNCTIONS: dict[str, Callable[[Result], Result]] = {
    "rtt-server": role_rtt_server, "rtt-client": role_rtt_client, "floor-send": role_floor_send,
    "floor-recv": role_floor_recv, "watch": role_watch, "drive": role_drive, "node": role_node,
}


def run_role(role: str, work: Path, params: Result) -> None:
    """Child entry (``--role``): run it and write ``<work>/<params[stem]>.json``."""
    result = ROLE_FUNCTIONS[role](params)
    (work / f"{params['stem']}.json").write_text(json.dumps(result))


def role_argv(role: str, work: Path, params: Result) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, "--workdir", str(work),
            "--params", json.dumps(params)]


def role_result(work: Path, stem: str) -> Result:
    result: Result = json.loads((work / f"{stem}.json").read_text())
    return result


# -- scenarios in the parent: processes on the LAN ---------------------------------------------------------------


def run_rtt(work: Path, a: Any, b: Any, timeout: float) -> Result:
    server = Proc(role_argv("rtt-server", work, {"ip": b.ip, "stem": "rtt_server"}), host=b, name="rtt server")
    port = int(server.wait_for(r"port (\d+)", stream="stdout")[1])
    client = Proc(role_argv("rtt-client", work, {"ip": b.ip, "port": port, "stem": "rtt_client"}), host=a,
                  name="rtt client")
    if client.reap(timeout) != 0:
        raise RuntimeError("rtt client failed: " + client.tail())
    server.reap(30)
    return role_result(work, "rtt_client")


def run_floor(work: Path, a: Any, b: Any, timeout: float) -> Result:
    vault = work / "floor" / "A"
    before = counters(a.ns)
    recv = Proc(role_argv("floor-recv", work, {"ip": b.ip, "vault": str(vault), "stem": "floor_recv",
                                               "timeout": timeout}), host=b, name="floor receiver")
    port = int(recv.wait_for(r"port (\d+)", stream="stdout")[1])
    send = Proc(role_argv("floor-send", work, {"ip": b.ip, "port": port, "vault": str(vault),
                                               "stem": "floor_send"}), host=a, name="floor sender")
    send.wait_for("ready", stream="stdout", timeout=timeout)
    send.send("go")
    if send.reap(timeout) != 0 or recv.reap(timeout) != 0:
        raise RuntimeError("floor failed: " + send.tail() + " || " + recv.tail())
    s, r = role_result(work, "floor_send"), role_result(work, "floor_recv")
    t0 = s["t0"]
    return {
        "seconds": r["t_applied"] - t0, "encode_s": s["t_encoded"] - t0, "seal_s": s["t_sealed"] - s["t_encoded"],
        "transfer_s": r["t_received"] - s["t_sealed"], "open_s": r["t_opened"] - r["t_received"],
        "apply_s": r["t_applied"] - r["t_opened"], "update_bytes": s["update_bytes"],
        "object_bytes": s["object_bytes"], "records": r["records"], "wire": diff(counters(a.ns), before),
        "rss_peak_recv_mb": r["rss_peak_mb"],
    }


def start_serve(host: Any, folder: Path, *extra: str) -> tuple[Proc, int]:
    """``crdtsync serve`` of ``folder`` on ``host`` (any free port, no discovery, no relay syncs); its port."""
    argv = [str(CRDTSYNC), "serve", "--interface", host.ip, "--port", "0", "--relay-interval", "0",
            "--no-discovery", *extra]
    daemon = Proc(argv, host=host, env=cli_env(folder), name=f"serve {host.name}")
    port = int(daemon.wait_for(r"listening on [0-9.]+:(\d+)")[1])
    return daemon, port


def run_lan_cold(work: Path, a: Any, b: Any, daemon_a: Proc, port: int, timeout: float) -> Result:
    folder_b = work / "lan" / "B"
    out: Result = {"memories_on_b_before": live_memories(folder_b)}
    out["rss_base_a_mb"] = reset_hwm(daemon_a.pid)
    before = counters(a.ns)
    argv = [str(CRDTSYNC), "sync", "--lan", "--peer", f"{a.ip}:{port}", "--timeout", "0.1", "--json"]
    sync_b = Proc(argv, host=b, env=cli_env(folder_b), name="sync --lan on B")
    peak = TreePeak(sync_b.pid)
    code = sync_b.reap(timeout, on_poll=peak.poll)
    wire = diff(counters(a.ns), before)
    out.update(seconds=sync_b.seconds, exit_code=code, wire=wire,
               rss_peak_b_mb=sync_b.rusage.ru_maxrss / 1024, rss_peak_b_polled_mb=peak.mib(),
               rss_peak_a_mb=status_kib(daemon_a.pid).get("VmHWM", 0) / 1024)
    try:
        out["report"] = json.loads("\n".join(sync_b.lines["stdout"]))
    except json.JSONDecodeError:
        out["report"] = None
        out["error"] = f"sync --lan exited {code}: " + sync_b.tail()
    out["memories_on_b"] = live_memories(folder_b)
    out["a_log"] = [line for line in daemon_a.lines["stderr"] if "peer" in line][-6:]
    out["a_phases"] = log_phases(out["a_log"])
    return out


def log_phases(lines: list[str]) -> Result:
    """From A's daemon log (UTC stamps, ms): session up -> A's entry sent (A commits and seals its log entry)
    -> session closed (B has taken and integrated it, acknowledged, closed)."""
    from datetime import datetime

    stamps: Result = {}
    for line in lines:
        when, _, event = line.partition(" ")
        key = "up" if event.startswith("peer up") else "sent" if "entries sent 1" in event and "down" not in \
            event else "down" if event.startswith("peer down") else None
        if key and key not in stamps:
            stamps[key] = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    out: Result = {}
    if {"up", "sent"} <= stamps.keys():
        out["up_to_sent_s"] = stamps["sent"] - stamps["up"]
    if {"sent", "down"} <= stamps.keys():
        out["sent_to_down_s"] = stamps["down"] - stamps["sent"]
    return out


def run_edits(work: Path, a: Any, b: Any, mode: str, edit_ids: list[str], daemon_a: Proc | None,
              port: int, timeout: float) -> Result:
    """One edit mode (module docstring): ``daemon_a`` is A's ``serve`` (mode ``cli``), or None (``inproc``: the
    driver runs A's node; B's daemon is started here and dials it)."""
    folder_a, folder_b = work / "lan" / "A", work / "lan" / "B"
    edits = [[memory_id, f" [lan edit {mode} {k}]"] for k, memory_id in enumerate(edit_ids)]
    edits[0][1] = f" [lan edit {mode} warm-up]"
    params = {"vault": str(folder_a), "mode": mode, "edits": edits, "ip": a.ip, "stem": f"drive_{mode}",
              "warmup_pause_s": 1.0}
    driver = Proc(role_argv("drive", work, params), host=a, name=f"driver {mode}")
    daemon_b: Proc | None = None
    watcher: Proc | None = None
    try:
        if mode == "inproc":
            port = int(driver.wait_for(r"listening (\d+)", stream="stdout", timeout=timeout)[1])
        else:
            driver.wait_for("ready", stream="stdout", timeout=timeout)
        if mode == "inproc":  # B's node in a process of this script, its parts timed
            daemon_b = Proc(role_argv("node", work, {"vault": str(folder_b), "ip": b.ip, "peer_ip": a.ip,
                                                     "peer_port": port, "stem": "node_b"}), host=b, name="node B")
        else:
            daemon_b, _ = start_serve(b, folder_b, "--peer", f"{a.ip}:{port}")
        daemon_b.wait_for("peer up", timeout=60)
        if daemon_a is not None:
            daemon_a.wait_for("peer up B", timeout=60)
        time.sleep(1.0)  # the opening exchange of summaries is over
        deadline = 2.0 + EDIT_SPACING[1] * len(edits) + 60
        watcher = Proc(role_argv("watch", work, {"vault": str(folder_b), "expected": edits,
                                                 "deadline_s": deadline, "stem": f"watch_{mode}"}),
                       host=b, name=f"watcher {mode}")
        watcher.wait_for("ready", stream="stdout")
        before = counters(a.ns)
        driver.send("go")
        node_b = daemon_b if mode == "inproc" else None
        resets: list[bool] = []

        def after_warmup() -> None:  # once B has the warm-up edit, A goes on; B's timers start when A's do
            assert watcher is not None
            if not resets and "seen warm-up" in watcher.lines["stdout"]:
                driver.send("continue")
                resets.append(False)
            if node_b is not None and resets == [False] and "measuring" in driver.lines["stdout"]:
                node_b.send("reset")
                resets.append(True)

        if driver.reap(timeout, on_poll=after_warmup) != 0:
            raise RuntimeError(f"driver {mode} failed: " + driver.tail())
        if watcher.reap(deadline + 30) != 0:
            raise RuntimeError(f"watcher {mode} failed: " + watcher.tail())
        wire = diff(counters(a.ns), before)
        if node_b is not None:
            node_b.send("stop")
            if node_b.reap(60) != 0:
                raise RuntimeError("node B failed: " + node_b.tail())
    finally:
        if watcher is not None:
            watcher.stop()
        driver.stop()
        if daemon_b is not None:
            daemon_b.stop()
    drive, watch = role_result(work, f"drive_{mode}"), role_result(work, f"watch_{mode}")
    latencies = [None if seen is None else seen - done for seen, done in
                 zip(watch["seen_at"], drive["committed_at"], strict=True)]
    per_edit = [{"rx": after[0] - pre[0], "tx": after[1] - pre[1]}
                for pre, after in zip(drive["counters"], drive["counters"][1:], strict=False)]
    measured = [x for x in latencies[1:] if x is not None]
    out: Result = {"mode": mode, "edits": len(edits) - 1, "seen": len(measured), "warmup_latency_s": latencies[0],
                   "warmup_bytes": per_edit[0] if per_edit else None, "latencies_s": latencies[1:],
                   "bytes_per_edit": per_edit[1:], "wire_total": wire, "watch_polls": watch["polls"],
                   "write_s": drive["write_s"][1:], "after_commit_s": drive["after_commit_s"][1:],
                   "write_s_median": statistics.median(drive["write_s"][1:]),
                   "b_snapshots_after_edit": [_edit_before(t, drive["committed_at"]) for t, _ in watch["snapshots"]]}
    if mode == "inproc":
        node = role_result(work, "node_b")
        out["breakdown"] = {"A": drive["breakdown"], "B": node["breakdown"]}
        out["frames"] = {"A": drive["frames"], "B": node["frames"]}
    if measured:
        out.update(median_s=statistics.median(measured), p99_s=quantile(measured, 0.99), min_s=min(measured),
                   max_s=max(measured), p90_s=quantile(measured, 0.90))
    sizes = [e["rx"] + e["tx"] for e in per_edit[1:]]
    if sizes:
        out.update(bytes_median=statistics.median(sizes), bytes_max=max(sizes),
                   bytes_tx_median=statistics.median(e["tx"] for e in per_edit[1:]),
                   bytes_rx_median=statistics.median(e["rx"] for e in per_edit[1:]))
    return out


def _edit_before(when: float, committed_at: list[float]) -> list[Any]:
    """``[k, seconds]``: the last edit committed on A before ``when`` (0 = the warm-up, k = the k-th measured)
    and how long before."""
    earlier = [k for k, t in enumerate(committed_at) if t <= when]
    k = earlier[-1] if earlier else 0
    return [k, when - committed_at[k]]


def run_folder_cold(work: Path, timeout: float) -> Result:
    out: Result = {}
    for side, folder in (("push", work / "fold" / "A"), ("pull", work / "fold" / "B")):
        sync = Proc([str(CRDTSYNC), "sync", "--json"], env=cli_env(folder), name=f"sync {side}")
        peak = TreePeak(sync.pid)
        code = sync.reap(timeout, on_poll=peak.poll)
        try:
            report = json.loads("\n".join(sync.lines["stdout"]))[0]
        except (json.JSONDecodeError, IndexError):
            report = None
        out[side] = {"seconds": sync.seconds, "exit_code": code, "report": report,
                     "rss_peak_mb": sync.rusage.ru_maxrss / 1024, "rss_peak_polled_mb": peak.mib()}
        if code != 0:
            out[side]["error"] = sync.tail()
    out["seconds"] = out["push"]["seconds"] + out["pull"]["seconds"]
    out["memories_on_b"] = live_memories(work / "fold" / "B")
    return out


# -- the parent ---------------------------------------------------------------------------------------------------


def prepare(work: Path, n: int) -> Result:
    """The corpus JSONL and the ids the edits touch (2 x (1 + EDITS) memories spread over the corpus)."""

    def edit_ids(base: list[dict[str, Any]]) -> None:
        count = 2 * (EDITS + 1)
        step = max(1, n // count)
        picks = {min(n - 1, 7 + k * step) for k in range(count)}
        ids = [row["id"] for i, row in enumerate(repeated(base, n)) if i in picks]
        (work / "edit_ids.json").write_text(json.dumps(ids))

    return harness.prepare_corpus(work, n, edit_ids)


def _machine() -> Result:
    return harness.machine(("pycrdt", "anyio", "cryptography"))


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def summarize(s: Result) -> Result:
    """Targets and the comparison rows."""
    targets: list[Result] = []
    cold, folder = s.get("lan_cold"), s.get("folder_cold")
    ok = harness_ok
    if ok(cold) and ok(folder):
        ratio = cold["seconds"] / folder["seconds"]
        targets.append({"target": "cold sync over the LAN (B's sync --lan) vs the folder mailbox (push + pull)",
                        "value": cold["seconds"], "unit": "s", "limit": "<= folder", "reference": folder["seconds"],
                        "ratio": ratio, "verdict": "PASS" if ratio <= 1.0 else "MISS"})
    for mode, label in (("edit_cli", "edit by another process (CLI/MCP)"),
                        ("edit_inproc", "edit in the daemon's process")):
        e = s.get(mode)
        info = mode != "edit_cli"
        if not ok(e) or "median_s" not in e:
            continue
        targets.append({**_absolute(f"one edit on the wire, both ways, median ({label})", e["bytes_median"],
                                    EDIT_MAX_BYTES, "B"), "information": info})
        targets.append({**_absolute(f"one edit commit -> peer's commit, median of {e['seen']} ({label})",
                                    e["median_s"], EDIT_MEDIAN_MAX_S, "s"), "information": info})
        targets.append({**_absolute(f"one edit commit -> peer's commit, p99 ({label})", e["p99_s"],
                                    EDIT_P99_MAX_S, "s"), "information": info})
        if e["seen"] < e["edits"]:
            targets.append({"target": f"edits seen on B ({label})", "value": e["seen"], "unit": "edits",
                            "limit": f"= {e['edits']}", "reference": e["edits"], "ratio": None,
                            "verdict": "MISS"})
    return {"targets": targets}


def harness_ok(result: Result | None) -> bool:
    return isinstance(result, dict) and bool(result) and "error" not in result


def _absolute(what: str, value: float, limit: float, unit: str) -> Result:
    shown = f"< {limit / 1024:g} KiB" if unit == "B" else f"< {limit * 1000:g} ms"
    return {"target": what, "value": value, "unit": unit, "limit": shown, "reference": limit,
            "ratio": value / limit, "verdict": "PASS" if value < limit else "MISS"}


def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 0.001:
        return f"{value * 1000:.2f} ms"
    return f"{value * 1e6:.0f} us"


def fmt_b(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10 * 1024:
        return f"{value:,.0f} B"
    if value < 10 * 2**20:
        return f"{value / 1024:,.1f} KiB"
    return f"{value / 2**20:,.1f} MiB"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return {"s": fmt_s, "B": fmt_b}.get(unit, lambda v: f"{v:,.0f} {unit}")(value)


def fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


def report_tables(r: Result, console: Any) -> None:
    from rich.table import Table

    p, m, s = r["params"], r["machine"], r["scenarios"]
    console.print(f"[bold]crdtsync LAN benchmark[/bold]: {p['n']:,} memories; {m['date']}, {m['cpus']} CPUs "
                  f"({m['cpu']}), Python {m['python']}, pycrdt {m.get('pycrdt')}, crdtsync {m['commit']}; load "
                  f"{harness.format_loads(r, 'start')} -> {harness.format_loads(r, 'end')}")
    t = s.get("template", {})
    if harness_ok(t):
        console.print(f"setup (untimed): A imported {t['memories']['live']:,} memories in {fmt_s(t['import_s'])}, "
                      f"vault {t['vault_mb']:.1f} MiB; B registered and empty")
    for name, result in s.items():
        if isinstance(result, dict) and "error" in result:
            console.print(f"[red]{name} failed[/red]: {result['error']}")

    cold, folder, floor, rtt, join = (s.get(k) for k in ("lan_cold", "folder_cold", "floor", "rtt", "join"))
    table = Table(title=f"Cold sync of {p['n']:,} memories, A -> B (B registered, empty)")
    for col in ("path", "time", "ratio to LAN", "bytes A->B", "bytes B->A", "peak RSS", "memories on B"):
        table.add_column(col, justify="left" if col == "path" else "right")
    lan_s = cold["seconds"] if harness_ok(cold) else None
    if harness_ok(cold):
        w = cold["wire"]
        table.add_row("LAN: B's `sync --lan` (spawn to exit), A's `serve` running", fmt_s(cold["seconds"]), "1.00x",
                      fmt_b(w["tx"]), fmt_b(w["rx"]),
                      f"B {fmt_mb(cold['rss_peak_b_polled_mb']['process'])} (worker "
                      f"{fmt_mb(cold['rss_peak_b_polled_mb']['children'])}); A {fmt_mb(cold['rss_peak_a_mb'])}",
                      f"{cold['memories_on_b']:,}")
        if cold.get("report"):
            table.add_row("  of which the round inside B's process (its JSON `seconds`)",
                          fmt_s(cold["report"].get("seconds")), _x(_ratio(cold["report"].get("seconds"), lan_s)),
                          "", "", "", "")
        phases = cold.get("a_phases", {})
        for key, label in (("up_to_sent_s", "  A's log: session up -> entry sent (A commits + seals its entry)"),
                           ("sent_to_down_s", "  A's log: entry sent -> session closed (B takes + integrates)")):
            if key in phases:
                table.add_row(label, fmt_s(phases[key]), _x(_ratio(phases[key], lan_s)), "", "", "", "")
    if harness_ok(folder):
        push, pull = folder["push"], folder["pull"]
        table.add_row("folder mailbox: A's `sync` + B's `sync` (each spawn to exit)", fmt_s(folder["seconds"]),
                      _x(_ratio(folder["seconds"], lan_s)),
                      fmt_b((push.get("report") or {}).get("up", {}).get("bytes")),
                      fmt_b((pull.get("report") or {}).get("up", {}).get("bytes")),
                      f"A {fmt_mb(push['rss_peak_polled_mb']['process'])}, B "
                      f"{fmt_mb(pull['rss_peak_polled_mb']['process'])} (worker "
                      f"{fmt_mb(pull['rss_peak_polled_mb']['children'])})", f"{folder['memories_on_b']:,}")
        table.add_row("  A's push", fmt_s(push["seconds"]), _x(_ratio(push["seconds"], lan_s)), "", "", "", "")
        table.add_row("  B's pull", fmt_s(pull["seconds"]), _x(_ratio(pull["seconds"], lan_s)), "", "", "", "")
    if harness_ok(join):
        j = join.get("default", {})
        table.add_row("mailbox.py `join` of a fresh device through that relay (in-process, Argon2id included)",
                      fmt_s(j.get("seconds")), _x(_ratio(j.get("seconds"), lan_s)), "",
                      fmt_b(j.get("stats", {}).get("bytes_down")), f"{fmt_mb(j.get('rss_peak_mb'))} (worker "
                      f"{fmt_mb(join.get('worker_peak_mb'))})", f"{join.get('memories_on_b', 0):,}")
    if harness_ok(floor):
        w = floor["wire"]
        table.add_row("floor: encode + seal A's Doc, one TCP connection, open + apply to a fresh Doc",
                      fmt_s(floor["seconds"]), _x(_ratio(floor["seconds"], lan_s)), fmt_b(w["tx"]), fmt_b(w["rx"]),
                      f"receiver {fmt_mb(floor['rss_peak_recv_mb'])}", f"{floor['records']:,} (Doc)")
        table.add_row("  encode / seal / transfer / open / apply",
                      " / ".join(fmt_s(floor[k]) for k in ("encode_s", "seal_s", "transfer_s", "open_s", "apply_s")),
                      "", "", "", "", "")
    console.print(table)

    table = Table(title=f"One edit, commit on A -> commit on B ({EDITS} edits, spaced {EDIT_SPACING[0] * 1000:.0f} "
                        f"to {EDIT_SPACING[1] * 1000:.0f} ms)")
    for col in ("writer", "median", "p90", "p99", "min", "max", "bytes median (A tx / rx)", "bytes max", "seen",
                "warm-up edit"):
        table.add_column(col, justify="left" if col == "writer" else "right")
    for mode, label in (("edit_cli", "another process beside `serve` (target)"),
                        ("edit_inproc", "the daemon's own process (LanNode + notify)")):
        e = s.get(mode)
        if not harness_ok(e) or "median_s" not in e:
            continue
        table.add_row(label, fmt_s(e["median_s"]), fmt_s(e["p90_s"]), fmt_s(e["p99_s"]), fmt_s(e["min_s"]),
                      fmt_s(e["max_s"]), f"{fmt_b(e['bytes_median'])} ({fmt_b(e['bytes_tx_median'])} / "
                      f"{fmt_b(e['bytes_rx_median'])})", fmt_b(e["bytes_max"]), f"{e['seen']}/{e['edits']}",
                      f"{fmt_s(e['warmup_latency_s'])}, {fmt_b(sum((e['warmup_bytes'] or {}).values()))}")
    if harness_ok(rtt):
        table.add_row("bare TCP round trip (Python, 1 byte each way)", fmt_s(rtt["median_s"]), "",
                      fmt_s(rtt["p99_s"]), fmt_s(rtt["min_s"]), fmt_s(rtt["max_s"]), "", "", str(rtt["count"]), "")
    console.print(table)
    e = s.get("edit_inproc")
    if harness_ok(e) and "breakdown" in e:
        table = Table(title=f"Where an edit's time goes, edit_inproc (per edit: total over the {e['edits']} "
                            "measured edits / edits; A's side can overlap B's)")
        for col in ("part", "A per edit", "A calls", "B per edit", "B calls"):
            table.add_column(col, justify="left" if col == "part" else "right")
        for label in e["breakdown"]["A"]:
            a_part, b_part = e["breakdown"]["A"][label], e["breakdown"]["B"].get(label, {"s": 0.0, "calls": 0})
            if a_part["calls"] or b_part["calls"]:
                table.add_row(label, fmt_s(a_part["s"] / e["edits"]), f"{a_part['calls']:.0f}",
                              fmt_s(b_part["s"] / e["edits"]), f"{b_part['calls']:.0f}")
        console.print(table)
        table = Table(title=f"What the sessions sent per edit, edit_inproc (frames before TLS; over the {e['edits']}"
                            " measured edits / edits)")
        for col in ("message", "A -> B count", "A -> B bytes", "B -> A count", "B -> A bytes"):
            table.add_column(col, justify="left" if col == "message" else "right")
        kinds = sorted(set(e["frames"]["A"]) | set(e["frames"]["B"]))
        totals = [0, 0]
        for kind in kinds:
            a_row, b_row = e["frames"]["A"].get(kind, [0, 0]), e["frames"]["B"].get(kind, [0, 0])
            totals[0] += a_row[1]
            totals[1] += b_row[1]
            table.add_row(kind, f"{a_row[0] / e['edits']:.2f}", fmt_b(a_row[1] / e["edits"]),
                          f"{b_row[0] / e['edits']:.2f}", fmt_b(b_row[1] / e["edits"]))
        table.add_row("all", "", fmt_b(totals[0] / e["edits"]), "", fmt_b(totals[1] / e["edits"]))
        console.print(table)
    for mode in ("edit_cli", "edit_inproc"):
        e = s.get(mode)
        if harness_ok(e) and e.get("write_s"):
            slow = [(k, w, lat) for k, (w, lat) in enumerate(zip(e["write_s"], e["latencies_s"], strict=True))
                    if w > 0.1 or (lat is not None and lat > EDIT_P99_MAX_S)]
            snaps = ", ".join(f"after edit #{k} (+{fmt_s(t)})" for k, t in e.get("b_snapshots_after_edit", []))
            console.print(f"{mode}: B's log compactions (a new Doc snapshot, visible when it commits, at the end of "
                          f"the compaction): {snaps or 'none'}")
            console.print(f"{mode}: Vault.update median {fmt_s(statistics.median(e['write_s']))}, max "
                          f"{fmt_s(max(e['write_s']))} (after its commit: max {fmt_s(max(e['after_commit_s']))}); "
                          f"edits over 100 ms to write or to reach B: {len(slow)}"
                          + ("" if not slow else f" (first: #{slow[0][0]}, write {fmt_s(slow[0][1])}, latency "
                                                 f"{fmt_s(slow[0][2])})"))
    console.print(harness.targets_table(r["summary"]["targets"], fmt_value))


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    scenarios = {"template": scenario_template}
    parser = harness.make_parser(__doc__, scenarios, default_timeout=DEFAULT_TIMEOUT,
                                 skip_help=f"comma-separated scenarios to leave out ({','.join(ORDER)})")
    parser.add_argument("--role", choices=ROLES, help="internal: a program run inside a host's namespace")
    args = parser.parse_args(argv)
    if args.role:
        run_role(args.role, args.workdir, json.loads(args.params))
        return 0
    if args.scenario:
        harness.run_scenario_here(scenarios, args.scenario, args.workdir, json.loads(args.params), profile=False)
        return 0

    console = harness.make_console(args.json, 150)
    skipped = harness.names(args.skip)
    if skipped - set(ORDER):
        parser.error(f"unknown scenarios: {', '.join(sorted(skipped - set(ORDER)))}")
    from tests.netns import Lan

    results: Result = {"params": {"n": args.n, "edits": EDITS, "edit_spacing_s": EDIT_SPACING,
                                  "watch_poll_s": WATCH_POLL}, "machine": _machine(), "scenarios": {},
                       "load_average": {}, "summary": {}}
    s = results["scenarios"]
    harness.record_load(results, "start")
    with harness.work_folder("crdtsync-lan-bench-", args.tmp, args.keep, console) as work:
        started = time.perf_counter()
        console.print(f"building the corpus ({args.n:,} memories) in {work} ...")
        results["corpus"] = prepare(work, args.n)
        console.print("setup: A, B registered through a folder relay, A imports the corpus (untimed) ...")
        s["template"] = harness.run_child(Path(__file__).resolve(), "template", work, {}, timeout=args.timeout,
                                          profile=False)
        if "error" in s["template"]:
            raise RuntimeError(f"the setup failed: {s['template']['error']}")
        for copy in ("lan", "fold", "floor"):
            for device in ("A", "B"):
                shutil.copytree(work / "template" / device, work / copy / device)
        edit_ids: list[str] = json.loads((work / "edit_ids.json").read_text())
        lan = Lan()
        try:
            a, b = lan.host("a"), lan.host("b")
            for name, run in (("rtt", lambda: run_rtt(work, a, b, args.timeout)),
                              ("floor", lambda: run_floor(work, a, b, args.timeout))):
                if name not in skipped:
                    console.print(f"running {name} ...")
                    s[name] = _guarded(run)
            wants_edits = not {"edit_cli", "edit_inproc"} <= skipped
            if "lan_cold" not in skipped or wants_edits:
                console.print("running lan_cold ...")
                daemon_a, port = start_serve(a, work / "lan" / "A")
                try:
                    s["lan_cold"] = _guarded(lambda: run_lan_cold(work, a, b, daemon_a, port, args.timeout))
                    if "edit_cli" not in skipped and harness_ok(s["lan_cold"]):
                        console.print("running edit_cli ...")
                        s["edit_cli"] = _guarded(lambda: run_edits(work, a, b, "cli", edit_ids[:EDITS + 1],
                                                                   daemon_a, port, args.timeout))
                finally:
                    daemon_a.stop()
                if "edit_inproc" not in skipped and harness_ok(s["lan_cold"]):
                    console.print("running edit_inproc ...")
                    s["edit_inproc"] = _guarded(lambda: run_edits(work, a, b, "inproc", edit_ids[EDITS + 1:],
                                                                  None, 0, args.timeout))
                if "lan_cold" in skipped:
                    s.pop("lan_cold")
        finally:
            lan.close()
        if "folder_cold" not in skipped:
            console.print("running folder_cold ...")
            s["folder_cold"] = _guarded(lambda: run_folder_cold(work, args.timeout))
        if "join" not in skipped:
            console.print("running join (bench/mailbox.py's scenario) ...")
            s["join"] = harness.run_child(ROOT / "bench" / "mailbox.py", "join", work,
                                          {"store": "folder", "work": str(work), "apply_deadline": 600.0},
                                          timeout=args.timeout, profile=False, stem="folder__join")
            if harness_ok(s["join"]):
                j = s["join"]
                s["join"]["memories_on_b"] = live_memories(Path(j["joined_path"]))
        results["wall_s"] = time.perf_counter() - started
        harness.record_load(results, "end")
        results["summary"] = summarize(s)
        report_tables(results, console)
        if args.json:
            print(json.dumps(results, indent=2, default=str))
    failed = any(isinstance(v, dict) and "error" in v for v in s.values())
    return 1 if failed else 0


def _guarded(run: Callable[[], Result]) -> Result:
    """``run()``, or ``{"error": ...}`` when it raised."""
    try:
        return run()
    except Exception as exc:  # a failed scenario is reported; the others still run
        return {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    sys.exit(main())
