"""Discovery on a LAN of namespaces: members find each other, outsiders and other vaults stay out, tags change
with every announcement, goodbyes take a member out at once. Each host runs ``discovery_node.py`` (or the
listening outsider ``mdns_observer.py``) inside its namespace; no packet leaves the namespaces."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdtsync.crypto.lan import lan_key
from tests.netns import Host, Lan

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VAULT_ID, OTHER_VAULT_ID = bytes(range(16)), bytes(range(1, 17))
KEY = lan_key(VAULT_ID, b"k" * 32, 1, "discovery")
OTHER_KEY = lan_key(OTHER_VAULT_ID, b"o" * 32, 1, "discovery")
BACKENDS = ["asyncio", "trio"]

Json = dict[str, Any]


class Proc:
    """A process on a host whose JSON lines on stdout are read by a thread into a queue."""

    def __init__(self, host: Host, argv: list[str]) -> None:
        self.host = host
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = host.popen([sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.lines: queue.Queue[Json] = queue.Queue()
        self.history: list[Json] = []  # every line, also those expect() passed over
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.history.append(json.loads(line))
            self.lines.put(self.history[-1])

    def expect(self, check: Callable[[Json], bool], timeout: float) -> Json:
        """The first line from now on that passes ``check``, within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if check(line):
                return line
        raise AssertionError(f"nothing expected from {self.host.name} within {timeout} s")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()


class Node(Proc):
    def __init__(self, host: Host, *, key: bytes = KEY, port: int = 7000, backend: str = "asyncio",
                 reannounce: float = 60.0, lifetime: float = 40.0) -> None:
        super().__init__(host, [str(HERE / "discovery_node.py"), key.hex(), host.ip, str(port), backend,
                                "--reannounce", str(reannounce), "--lifetime", str(lifetime)])
        self.port = port
        self.instances = self.expect(lambda e: e["event"] == "ready", 15)["instances"]

    def members(self) -> list[Json]:
        self.send("found")
        return list(self.expect(lambda e: e["event"] == "found", 5)["members"])

    def wait_members(self, check: Callable[[list[Json]], bool], timeout: float = 8.0) -> list[Json]:
        """Ask for the members every 0.2 s until ``check`` passes, within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            members = self.members()
            if check(members) or time.monotonic() > end:
                return members
            time.sleep(0.2)


def view(node: Node) -> set[tuple[str, tuple[str, ...], int]]:
    return {(m["instance"], tuple(m["addresses"]), m["port"]) for m in node.members()}


def expected(*nodes: Node) -> set[tuple[str, tuple[str, ...], int]]:
    return {(n.instances[0], (n.host.ip,), n.port) for n in nodes}


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_members_find_each_others_address_and_port_and_never_themselves(lan: Lan, backend: str) -> None:
    nodes = [Node(lan.host(name), port=7000 + i, backend=backend) for i, name in enumerate("abc")]
    for node in nodes:
        others = [n for n in nodes if n is not node]
        node.wait_members(lambda m, others=others: len(m) >= 2)  # type: ignore[misc]
        assert view(node) == expected(*others)
        assert all(m["version"] == 2 for m in node.members())
    news = {(e["instance"], tuple(e["addresses"]), e["port"]) for e in nodes[0].history if e["event"] == "new"}
    assert news == expected(*nodes[1:])  # next_found reported each once, as it appeared


def test_a_device_of_another_vault_is_not_reported_nor_reports_members(lan: Lan) -> None:
    a, b = Node(lan.host("a")), Node(lan.host("b"), backend="trio")
    stranger = Node(lan.host("c"), key=OTHER_KEY)
    a.wait_members(lambda m: len(m) >= 1)
    time.sleep(1.0)  # the stranger's announcements went out long ago
    assert view(a) == expected(b)
    assert view(b) == expected(a)
    assert view(stranger) == set()


def test_a_host_that_drops_mdns_multicast_both_ways_finds_nobody_and_is_found_by_nobody(lan: Lan) -> None:
    mute_host = lan.host("mute")
    for chain in ("INPUT", "OUTPUT"):
        mute_host.iptables("-A", chain, "-d", "224.0.0.251", "-j", "DROP")
    a = Node(lan.host("a"))
    mute = Node(mute_host, port=7002)
    b = Node(lan.host("b"), port=7001)
    a.wait_members(lambda m: len(m) >= 1)
    time.sleep(1.0)
    assert view(a) == expected(b)
    assert view(mute) == set()


def test_a_host_that_drops_only_incoming_multicast_is_still_found_and_finds_through_unicast_replies(
        lan: Lan) -> None:
    # Its own announcements go out; its browser's first query asks for unicast replies (mDNS "QU"), which the
    # rule does not drop. Dropping incoming multicast is no way to hide a device: drop what it sends.
    deaf_host = lan.host("deaf")
    deaf_host.iptables("-A", "INPUT", "-d", "224.0.0.251", "-j", "DROP")
    a = Node(lan.host("a"))
    deaf = Node(deaf_host, port=7001)
    a.wait_members(lambda m: len(m) >= 1)
    assert view(a) == expected(deaf)
    deaf.wait_members(lambda m: len(m) >= 1)
    assert view(deaf) == expected(a)


def observe(host: Host, ip: str | None = None) -> Proc:
    observer = Proc(host, [str(HERE / "mdns_observer.py"), ip or host.ip, "30"])
    observer.expect(lambda e: e["event"] == "ready", 10)
    return observer


def tags_of(observer: Proc, instance: str, count: int, timeout: float) -> list[Json]:
    """The TXT records of ``instance`` heard until ``count`` distinct tags were, within ``timeout`` s."""
    heard: dict[str, Json] = {}
    end = time.monotonic() + timeout
    while len(heard) < count:
        record = observer.expect(lambda e: e.get("type") == "TXT" and e["name"].startswith(instance + "."),
                                 max(0.01, end - time.monotonic()))
        heard.setdefault(record["txt"].get("t", ""), record)
    return list(heard.values())


def test_a_new_announcement_carries_a_fresh_unrelated_tag_and_only_version_and_tag(lan: Lan) -> None:
    observer = observe(lan.host("o"))
    node = Node(lan.host("a"))
    first = tags_of(observer, node.instances[0], 1, 5)[0]
    node.send("reannounce")
    records = tags_of(observer, node.instances[0], 2, 5)
    tags = [r["txt"]["t"] for r in records]
    assert all(r["txt"].keys() == {"v", "t"} and r["txt"]["v"] == "2" for r in records)
    assert first["txt"]["t"] in tags and tags[0] != tags[1]
    assert all(len(t) == 43 for t in tags)
    assert sum(x == y for x, y in zip(tags[0], tags[1], strict=True)) < 15  # no shared part an observer can match


def test_tags_are_renewed_periodically(lan: Lan) -> None:
    observer = observe(lan.host("o"))
    node = Node(lan.host("a"), reannounce=0.5, backend="trio")
    assert len(tags_of(observer, node.instances[0], 3, 6)) == 3


def test_names_are_random_per_run_and_never_the_machines_host_name(lan: Lan) -> None:
    observer = observe(lan.host("o"))
    host = lan.host("a")
    runs = []
    for _ in range(2):
        node = Node(host)
        srv = observer.expect(lambda e, node=node: e.get("type") == "SRV"  # type: ignore[misc]
                              and e["name"].startswith(node.instances[0] + "."), 5)
        runs.append((node.instances[0], srv["server"]))
        node.send("quit")
        node.expect(lambda e: e["event"] == "closed", 5)
    (instance1, server1), (instance2, server2) = runs
    assert instance1 != instance2 and server1 != server2
    hostname = os.uname().nodename.lower()
    assert all(hostname not in name.lower() for name in (instance1, instance2, server1, server2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_member_cancelled_says_goodbye_too(lan: Lan, backend: str) -> None:
    a = Node(lan.host("a"))
    b = Node(lan.host("b"), backend=backend, lifetime=3.0)  # its task is cancelled after 3 s
    assert a.wait_members(lambda m: len(m) == 1)
    b.expect(lambda e: e["event"] == "closed", 6)
    assert a.wait_members(lambda m: m == [], timeout=4) == []


def test_a_browse_only_device_finds_members_and_is_not_announced(lan: Lan) -> None:
    observer = observe(lan.host("o"))
    a = Node(lan.host("a"))
    browser = Node(lan.host("b"), port=0, backend="trio")
    assert [m["instance"] for m in browser.wait_members(lambda m: len(m) == 1)] == a.instances
    time.sleep(0.5)
    assert a.members() == []
    heard = [e for e in observer.history if e["event"] == "record" and e["source"] == browser.host.ip]
    # Its queries may list what it knows (a's records, "known answers"), never a service of its own.
    assert all(e["name"].startswith(a.instances[0]) or e.get("alias", "").startswith(a.instances[0])
               for e in heard if e["type"] in ("PTR", "SRV", "TXT"))


def test_a_goodbye_takes_a_member_out_of_the_others_view_at_once(lan: Lan) -> None:
    a, b = Node(lan.host("a")), Node(lan.host("b"), backend="trio")
    assert a.wait_members(lambda m: len(m) == 1)
    b.send("quit")
    b.expect(lambda e: e["event"] == "closed", 5)
    assert a.wait_members(lambda m: m == [], timeout=4) == []


def fake_member(host: Host, *, key: bytes = KEY, instance: str = "f00dfeedf00dfeed", port: int = 7100,
                count: int = 1, tag: str | None = None) -> None:
    """Send ``count`` announcements of ``instance`` from ``host``, each from another source port."""
    argv = [sys.executable, str(HERE / "fake_member.py"), host.ip, key.hex(), instance, str(port), str(count)]
    host.run(argv + (["--tag", tag] if tag else []), check=True, timeout=20, capture_output=True,
             env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_hand_made_announcement_with_a_valid_tag_is_reported(lan: Lan) -> None:
    node = Node(lan.host("a"))
    fake_member(lan.host("f"), count=3)
    assert node.wait_members(lambda m: len(m) == 1)[0]["instance"] == "f00dfeedf00dfeed"


def test_a_tag_copied_from_a_member_is_worth_nothing_under_another_name_or_port(lan: Lan) -> None:
    observer = observe(lan.host("o"))
    a, b = Node(lan.host("a")), Node(lan.host("b"), port=7001)
    copied = tags_of(observer, b.instances[0], 1, 5)[0]["txt"]["t"]
    copier = lan.host("x")
    fake_member(copier, instance="c0ffeec0ffeec0ff", port=7001, tag=copied, count=3)
    # Under b's own name with another port, the records replace b's in the others' caches (mDNS cannot stop
    # that): b drops out of view until it announces again, but the copy is never reported.
    fake_member(copier, instance=b.instances[0], port=7999, tag=copied, count=3)
    for _ in range(8):
        assert all(m["instance"] != "c0ffeec0ffeec0ff" and m["port"] != 7999 for m in a.members())
        time.sleep(0.2)


def test_announcements_on_an_interface_not_chosen_never_reach_discovery(lan: Lan) -> None:
    # m sits on two LANs and runs discovery on the first only; another program on m (the observer, as avahi or
    # another zeroconf stack would) listens on the second. A member there announces 30 times, each time from
    # another source port. With IP_MULTICAST_ALL off alone, part of these reach m's discovery (the kernel's
    # SO_REUSEPORT choice depends on the source port); bound to its interface, none does
    # (crdtsync.discovery._service).
    other = Lan()
    try:
        m, a = lan.host("m"), lan.host("a")
        spy = observe(m, m.plug_into(other))
        node_a, node_m = Node(a, port=7001), Node(m)
        node_m.wait_members(lambda x: len(x) >= 1)
        fake_member(other.host("far"), count=30)
        for _ in range(30):  # and the other program on m got every one of them: discovery took none of its own
            spy.expect(lambda e: e.get("type") == "SRV" and e["name"].startswith("f00dfeedf00dfeed."), 5)
        time.sleep(0.5)
        assert view(node_m) == expected(node_a)
    finally:
        other.close()


def test_by_default_a_host_runs_discovery_on_its_lan_address_only(lan: Lan) -> None:
    host = lan.host("a")
    docker = "ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up"
    host.run(["sh", "-c", docker], check=True, timeout=10)
    script = ("import json; from crdtsync.discovery import choose_interfaces, host_interfaces; "
              "print(json.dumps([choose_interfaces([], host_interfaces()), choose_interfaces(['172.17.0.1'], "
              "host_interfaces())]))")
    out = host.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert json.loads(out) == [[host.ip], ["172.17.0.1"]]
