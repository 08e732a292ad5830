"""`crdtsync serve` on a LAN of network namespaces, each device its own process in its own namespace, no relay:
devices discover each other and converge on the LoCoMo corpus, a write by a separate CLI process next to a running
daemon reaches the peers live, a chain where two devices never see each other converges through the third,
`--peer` works with multicast dropped, a peer killed with SIGKILL is noticed by the heartbeat and a restarted one
syncs again, and `sync --lan` does one round and exits."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import shared_data
from tests.lan.devices import Daemon, contents, crdtsync, eventually, make_devices
from tests.netns import Host, Lan


def drop_multicast(host: Host) -> None:
    """The network drops multicast to and from ``host`` (a Wi-Fi with client isolation, a router that filters
    mDNS): its announcements and queries never leave, and none reach it."""
    host.iptables("-A", "INPUT", "-d", "224.0.0.0/4", "-j", "DROP")
    host.iptables("-A", "OUTPUT", "-d", "224.0.0.0/4", "-j", "DROP")


def test_two_devices_discover_each_other_and_converge_on_the_locomo_corpus(lan: Lan, tmp_path: Path) -> None:
    d0, d1 = make_devices(tmp_path, 2)
    imported = crdtsync(d0, "import", str(shared_data("locomo")), "--json")
    assert imported.returncode == 0, imported.stderr
    crdtsync(d1, "add", "written on d1 before they met")
    a, b = lan.host("a"), lan.host("b")
    Daemon(a, d0)
    peer = Daemon(b, d1)
    peer.wait_for(r"peer up d0")
    eventually(lambda: contents(d0) == contents(d1), timeout=120, what="both vaults holding the same memories")
    assert len(contents(d1)) == 5882 + 1

    written = crdtsync(d0, "add", "written by a CLI process next to the daemon", "--json")
    assert written.returncode == 0, written.stderr
    memory_id = json.loads(written.stdout)["id"]
    eventually(lambda: memory_id in dict(contents(d1)), timeout=10, what="the CLI write reaching the peer")


def test_four_devices_each_with_part_of_the_corpus_all_converge(lan: Lan, tmp_path: Path) -> None:
    folders = make_devices(tmp_path, 4)
    for folder, part in zip(folders, ("26.json", "30.json", "41.json", "42.json"), strict=True):
        assert crdtsync(folder, "import", str(shared_data("locomo", part))).returncode == 0
    daemons = [Daemon(lan.host(f"h{n}"), folder) for n, folder in enumerate(folders)]
    for daemon in daemons:
        for other in range(4):
            if daemon.folder != folders[other]:
                daemon.wait_for(rf"peer up d{other} ")
    reference = eventually(lambda: contents(folders[0]) if len({len(contents(f)) for f in folders}) == 1 and
                           len(contents(folders[0])) > 2000 else None, timeout=120, what="four vaults converging")
    assert all(contents(folder) == reference for folder in folders[1:])


def test_a_chain_where_the_ends_never_see_each_other_converges(lan: Lan, tmp_path: Path) -> None:
    d0, d1, d2 = make_devices(tmp_path, 3)
    a, b, c = lan.host("a"), lan.host("b"), lan.host("c")
    a.iptables("-A", "INPUT", "-s", c.ip, "-j", "DROP")  # a and c are out of each other's reach
    c.iptables("-A", "INPUT", "-s", a.ip, "-j", "DROP")
    daemons = [Daemon(a, d0), Daemon(b, d1), Daemon(c, d2)]
    daemons[1].wait_for(r"peer up d0")
    daemons[1].wait_for(r"peer up d2")
    crdtsync(d0, "add", "from the a end")
    crdtsync(d2, "add", "from the c end")
    eventually(lambda: contents(d0) == contents(d2) and len(contents(d0)) == 2, what="both ends converging")
    assert not any("peer up d2" in line for line in daemons[0].lines)


def test_peer_works_with_multicast_dropped_and_the_address_is_remembered(lan: Lan, tmp_path: Path) -> None:
    d0, d1 = make_devices(tmp_path, 2)
    a, b = lan.host("a"), lan.host("b")
    drop_multicast(a)
    drop_multicast(b)
    first = Daemon(a, d0)
    second = Daemon(b, d1, "--peer", f"{a.ip}:{first.port}")
    second.wait_for(r"peer up d0")
    crdtsync(d0, "add", "through --peer")
    eventually(lambda: [c for _, c in contents(d1)] == ["through --peer"], what="the write arriving")
    peers = json.loads(crdtsync(d1, "peers", "--json").stdout)
    assert peers["daemon"]["running"] and [(p["name"], p["state"]) for p in peers["peers"]] == [("d0", "connected")]
    reached = {d["name"]: d["reached"] for d in json.loads(crdtsync(d1, "devices", "--json").stdout)}
    assert reached["d0"]["address"] == f"{a.ip}:{first.port}" and reached["d1"] is None
    assert "peer d0" in crdtsync(d1, "status").stdout
    assert second.stop() == 0
    stopped = json.loads(crdtsync(d1, "peers", "--json").stdout)
    assert not stopped["daemon"]["running"] and stopped["peers"][0]["state"] == "disconnected"
    again = Daemon(b, d1)  # no --peer now: the address where d0 was reached is remembered
    again.wait_for(r"peer up d0")


def test_a_killed_peer_is_noticed_within_15_s_and_a_restarted_one_syncs_again(lan: Lan, tmp_path: Path) -> None:
    d0, d1 = make_devices(tmp_path, 2)
    a, b = lan.host("a"), lan.host("b")
    survivor = Daemon(a, d0)
    victim = Daemon(b, d1)
    survivor.wait_for(r"peer up d1")
    a.iptables("-A", "INPUT", "-s", b.ip, "-j", "DROP")  # no FIN, no RST reaches the survivor: a vanished host
    mark = len(survivor.lines)
    victim.kill()
    killed = time.monotonic()
    survivor.wait_for(r"peer down d1 .*LAN_PEER_GONE", timeout=20, after=mark)
    assert time.monotonic() - killed < 15 + 1
    a.iptables("-D", "INPUT", "-s", b.ip, "-j", "DROP")
    crdtsync(d0, "add", "written while d1 was down")
    mark = len(survivor.lines)
    Daemon(b, d1)  # the same identity comes back
    survivor.wait_for(r"peer up d1", after=mark)
    eventually(lambda: "written while d1 was down" in dict(contents(d1)).values(), what="the restarted peer syncing")


def test_sync_lan_does_one_round_and_exits(lan: Lan, tmp_path: Path) -> None:
    d0, d1, d2 = make_devices(tmp_path, 3)
    a, b, c = lan.host("a"), lan.host("b"), lan.host("c")
    Daemon(a, d0)
    crdtsync(d0, "add", "from the daemon's device")
    crdtsync(d1, "add", "from the one-shot device")
    round_ = crdtsync(d1, "sync", "--lan", "--interface", b.ip, "--timeout", "3", "--json", host=b)
    assert round_.returncode == 0, round_.stderr
    report = json.loads(round_.stdout)
    assert [s["name"] for s in report["sessions"]] == ["d0"] and report["sessions"][0]["error"] is None
    assert {c for _, c in contents(d1)} == {"from the daemon's device", "from the one-shot device"}
    eventually(lambda: len(contents(d0)) == 2, what="the daemon's device receiving the one-shot's write")

    drop_multicast(c)  # c hears no announcement and has met no one: nothing to dial
    alone = crdtsync(d2, "sync", "--lan", "--interface", c.ip, "--timeout", "1", host=c)
    assert alone.returncode == 9 and "LAN_NO_PEER" in alone.stderr
    given = crdtsync(d2, "sync", "--lan", "--interface", c.ip, "--peer", f"{a.ip}:47354", "--timeout", "1", host=c)
    assert given.returncode == 0, given.stderr
    assert len(contents(d2)) == 2
