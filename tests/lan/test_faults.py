"""Faults and hostile parties on a LAN of network namespaces, against `crdtsync serve` processes: a cable pulled
mid-transfer, packet loss, a slow link, and strangers that speak garbage, replay a member's captured bytes or
flood the port. Nothing is lost or corrupted, the sync completes, and honest peers keep syncing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import shared_data
from tests.lan.devices import Daemon, contents, crdtsync, eventually, make_devices
from tests.netns import Host, Lan

HERE = Path(__file__).resolve().parent
PORT = 47354


def _status(folder: Path) -> dict[str, object]:
    status = crdtsync(folder, "status", "--json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)  # type: ignore[no-any-return]


def _clean(folder: Path) -> None:
    """Nothing refused, held or alarming in the vault."""
    status = _status(folder)
    assert (status["quarantined_updates"], status["held_updates"], status["alarms"]) == (0, 0, [])


def test_a_cable_pulled_mid_transfer_for_longer_than_the_liveness_limit(lan: Lan, tmp_path: Path) -> None:
    d0, d1 = make_devices(tmp_path, 2)
    assert crdtsync(d0, "import", str(shared_data("locomo"))).returncode == 0
    a, b = lan.host("a"), lan.host("b")
    sender = Daemon(a, d0)
    receiver = Daemon(b, d1)
    receiver.wait_for(r"peer up d0")
    b.link_down()
    cut = time.monotonic()
    receiver.wait_for(r"peer down d0 .*LAN_PEER_GONE", timeout=20)
    sender.wait_for(r"peer down d1 .*LAN_PEER_GONE", timeout=20)
    assert time.monotonic() - cut < 15 + 2
    b.link_up()
    eventually(lambda: contents(d0) == contents(d1), timeout=120, what="the sync completing after the cable is back")
    assert len(contents(d1)) == 5882
    _clean(d1)


def test_packet_loss_delays_but_never_damages_the_sync(lan: Lan, tmp_path: Path) -> None:
    d0, d1 = make_devices(tmp_path, 2)
    assert crdtsync(d0, "import", str(shared_data("locomo", "26.json"))).returncode == 0
    a, b = lan.host("a"), lan.host("b")
    for host in (a, b):  # 10% of the packets in each direction vanish
        host.iptables("-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP")
    Daemon(a, d0)
    Daemon(b, d1)
    eventually(lambda: contents(d0) == contents(d1) and len(contents(d1)) > 400, timeout=120,
               what="convergence under 10% loss")
    _clean(d1)


def test_a_slow_link_still_carries_a_live_session(lan: Lan, tmp_path: Path) -> None:
    d0, d1 = make_devices(tmp_path, 2)
    assert crdtsync(d0, "import", str(shared_data("locomo", "30.json"))).returncode == 0
    a, b, m = lan.host("a"), lan.host("b"), lan.host("m")
    _proxy(m, a, delay=0.1)  # 100 ms each way: a 200 ms round trip
    Daemon(a, d0, "--no-discovery")
    receiver = Daemon(b, d1, "--no-discovery", "--peer", f"{m.ip}:{PORT}")
    receiver.wait_for(r"peer up d0")
    eventually(lambda: contents(d0) == contents(d1), timeout=120, what="convergence over a slow link")
    added = json.loads(crdtsync(d0, "add", "over the slow link", "--json").stdout)
    eventually(lambda: added["id"] in dict(contents(d1)), timeout=10, what="a live write over the slow link")


def test_strangers_get_nothing_and_honest_peers_keep_syncing(lan: Lan, tmp_path: Path) -> None:
    d0, d1 = make_devices(tmp_path, 2)
    a, b, m, x = lan.host("a"), lan.host("b"), lan.host("m"), lan.host("x")
    record = tmp_path / "captured.bin"
    _proxy(m, a, delay=0.0, record=record)
    server = Daemon(a, d0, "--no-discovery")
    honest = Daemon(b, d1, "--no-discovery", "--peer", f"{m.ip}:{PORT}")  # through the recording forwarder
    honest.wait_for(r"peer up d0")
    captured = record.read_bytes()
    assert len(captured) > 1000  # a whole session: the knock, TLS, frames

    # garbage, then a replay of the member's captured bytes: each gets nothing back but a closed connection
    for attempt, payload in (("garbage", os.urandom(4096)), ("replay", captured)):
        answer = _talk(x, a.ip, payload)
        assert len(answer) <= 32, (attempt, answer)  # at most the knock's random nonce
        server.wait_for(rf"refused {x.ip}: LAN_REFUSED", timeout=10)

    # a flood: far more connection attempts than allowed per minute; the extra ones are turned away at once
    flood = x.run([sys.executable, str(HERE / "flood.py"), a.ip, str(PORT), "150"], capture_output=True, text=True,
                  timeout=60)
    assert flood.returncode == 0, flood.stderr
    server.wait_for(rf"refused {x.ip}: LAN_BUSY", timeout=10)

    written = json.loads(crdtsync(d0, "add", "written during the attack", "--json").stdout)
    eventually(lambda: written["id"] in dict(contents(d1)), timeout=10, what="the honest peer still syncing")
    assert not [line for line in server.lines if "peer up" in line and x.ip in line]


def _proxy(host: Host, target: Host, *, delay: float, record: Path | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(HERE / "delay_proxy.py"), host.ip, str(PORT), target.ip, str(PORT), str(delay)]
    proc = host.popen([*argv, *([str(record)] if record else [])], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def _talk(host: Host, address: str, payload: bytes) -> bytes:
    """Connect from ``host``, send ``payload``, and return everything the other side sends before it closes."""
    script = (
        "import socket,sys\n"
        f"s=socket.create_connection(({address!r},{PORT}),timeout=20)\n"
        "data=sys.stdin.buffer.read()\n"
        "try:\n    s.sendall(data)\nexcept OSError:\n    pass\n"
        "got=b''\n"
        "try:\n"
        "    while chunk:=s.recv(65536):\n        got+=chunk\n"
        "except OSError:\n    pass\n"
        "sys.stdout.buffer.write(got)\n"
    )
    done = host.run([sys.executable, "-c", script], input=payload, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return bytes(done.stdout)


