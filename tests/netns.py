"""A LAN of network namespaces for tests: hosts on one Ethernet segment, isolated from this machine's network.

Every host is a namespace ``<prefix>-<name>`` with ``lo`` up and one veth cable ``eth0`` into a bridge ``br0``
that lives in a namespace of its own, ``<prefix>-sw`` (the switch), never in the root namespace; the veth pairs
are created inside the switch namespace with their far end placed straight into the host's namespace, so no
interface of this run ever appears in the root namespace. Host addresses are ``10.X.Y.N/24`` with X and Y drawn
at random per :class:`Lan` and N = 1, 2, ... in the order hosts are made; each host routes ``224.0.0.0/4`` (mDNS
multicast) to its cable. The prefix is random per :class:`Lan` (``n`` + 5 hex digits), so runs side by side never
collide and teardown deletes only this run's namespaces.

Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and ``ip`` from iproute2; ``iptables`` for
:meth:`Host.iptables`. The ``lan`` fixture (``tests/lan/conftest.py``) skips without them, and fails instead
when ``CI=true``.

Teardown (:meth:`Lan.close`) never raises: it sends SIGTERM to the process group of every process started with
:meth:`Host.popen`, SIGKILL after a grace of :data:`KILL_GRACE` seconds, then deletes this run's namespaces;
each failure is logged and the rest goes on.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from typing import Any, ClassVar

log = logging.getLogger(__name__)

#: Seconds a process gets between SIGTERM and SIGKILL at teardown.
KILL_GRACE = 2.0
#: Seconds any single ``ip``/``iptables`` command may take.
COMMAND_TIMEOUT = 10.0
#: Cables one LAN takes at most (addresses .1 to .200).
MAX_HOSTS = 200


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``, or the kernel refuses)."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=COMMAND_TIMEOUT)


def netns_names() -> list[str]:
    """The names of the network namespaces ``ip netns`` knows, on this machine."""
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True,
                         timeout=COMMAND_TIMEOUT).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class Host:
    """One machine of a :class:`Lan`: a namespace with one cable into the switch.

    Attributes:
        name: the name given to :meth:`Lan.host`.
        ns: the namespace's name, ``<prefix>-<name>``.
        ip: its IPv4 address on the LAN (no prefix length; the LAN is a /24).
        iface: the interface name inside the namespace (``eth0``).
    """

    def __init__(self, lan: Lan, name: str, ns: str, ip: str, switch_port: str) -> None:
        self.lan = lan
        self.name = name
        self.ns = ns
        self.ip = ip
        self.iface = "eth0"
        self._switch_port = switch_port
        self._cables = 1

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ns={self.ns!r}, ip={self.ip!r})"

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` as run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace (``ip netns exec``, which execs it: the pid is the program's).

        It runs in a new session (its own process group) unless ``start_new_session`` is given, and is killed at
        teardown, its process group with it. Other keyword arguments go to :class:`subprocess.Popen`.
        """
        kw.setdefault("start_new_session", True)
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.argv(argv), **kw)
        self.lan._procs.append((proc, bool(kw["start_new_session"])))
        return proc

    def run(self, argv: list[str], *, timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside the namespace to completion, at most ``timeout`` seconds (then it is killed and
        :class:`subprocess.TimeoutExpired` raised). Keyword arguments go to :func:`subprocess.run`."""
        return subprocess.run(self.argv(argv), timeout=timeout, **kw)

    def link_down(self) -> None:
        """Pull this host's cable: its port on the switch goes down (the host sees no carrier)."""
        _ip("-n", self.lan.switch_ns, "link", "set", self._switch_port, "down")

    def link_up(self) -> None:
        """Plug the cable back in."""
        _ip("-n", self.lan.switch_ns, "link", "set", self._switch_port, "up")

    def plug_into(self, other: Lan) -> str:
        """Give this host one more cable (``eth1``, ``eth2``, ...) into another LAN's switch: a machine on two
        networks. Returns its address there. The cable goes when either LAN is torn down.

        Raises:
            ValueError: ``other`` is this host's own LAN, has the same subnet, or is full.
        """
        if other is self.lan or other.subnet == self.lan.subnet:
            raise ValueError("plug into another LAN, on another subnet")
        index, iface = other._take_index(), f"eth{self._cables}"
        port, ip = f"p{index}", f"{other.subnet}.{index}"
        _ip("-n", other.switch_ns, "link", "add", port, "type", "veth", "peer", "name", iface, "netns", self.ns)
        _ip("-n", other.switch_ns, "link", "set", port, "master", "br0")
        _ip("-n", other.switch_ns, "link", "set", port, "up")
        _ip("-n", self.ns, "addr", "add", f"{ip}/24", "dev", iface)
        _ip("-n", self.ns, "link", "set", iface, "up")
        self._cables += 1
        return ip

    def iptables(self, *args: str) -> None:
        """Run ``iptables *args`` in this host's namespace (its own tables), e.g. drop incoming mDNS:
        ``host.iptables("-A", "INPUT", "-d", "224.0.0.251", "-j", "DROP")``.

        Raises:
            subprocess.CalledProcessError: iptables refused the rule.
        """
        subprocess.run(self.argv(["iptables", *args]), check=True, capture_output=True, timeout=COMMAND_TIMEOUT)


class Lan:
    """One Ethernet segment of namespaces; make hosts with :meth:`host`, tear down with :meth:`close`.

    Raises:
        NetnsUnavailable: from the constructor, when namespaces cannot be made here.
    """

    _subnets_in_use: ClassVar[set[str]] = set()

    def __init__(self) -> None:
        if shutil.which("ip") is None:
            raise NetnsUnavailable("iproute2's `ip` is not installed")
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        self.prefix = "n" + secrets.token_hex(3)[:5]
        self.subnet = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
        while self.subnet in Lan._subnets_in_use:  # LANs alive at once get distinct subnets
            self.subnet = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
        Lan._subnets_in_use.add(self.subnet)
        self.switch_ns = f"{self.prefix}-sw"
        self.hosts: list[Host] = []
        self._last_index = 0
        self._procs: list[tuple[subprocess.Popen[bytes], bool]] = []  # (process, leads its own group)
        self._namespaces: list[str] = []
        try:
            self._add_ns(self.switch_ns)
            _ip("-n", self.switch_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch_ns, "link", "set", "br0", "up")
        except (OSError, subprocess.SubprocessError) as exc:
            self.close()
            detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) \
                and exc.stderr else str(exc)
            raise NetnsUnavailable(f"cannot make a network namespace: {detail}") from exc

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def host(self, name: str) -> Host:
        """A new host ``<prefix>-<name>`` plugged into the switch, with the next address of the LAN.

        Raises:
            ValueError: the name is taken on this LAN, is not a short ``[a-z0-9]`` word, or the LAN is full.
            subprocess.CalledProcessError: ``ip`` refused a step.
        """
        if not re.fullmatch(r"[a-z0-9]{1,20}", name):
            raise ValueError(f"host name {name!r}: use up to 20 lower-case letters and digits")
        if name == "sw" or any(h.name == name for h in self.hosts):
            raise ValueError(f"host name {name!r} is taken on this LAN")
        index = self._take_index()
        ns, port, ip = f"{self.prefix}-{name}", f"p{index}", f"{self.subnet}.{index}"
        self._add_ns(ns)
        # Made inside the switch's namespace with the far end moved straight into the host's: the root namespace
        # never holds either end.
        _ip("-n", self.switch_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", self.switch_ns, "link", "set", port, "master", "br0")
        _ip("-n", self.switch_ns, "link", "set", port, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        host = Host(self, name, ns, ip, port)
        self.hosts.append(host)
        return host

    def _take_index(self) -> int:
        if self._last_index >= MAX_HOSTS:
            raise ValueError("this LAN is full")
        self._last_index += 1
        return self._last_index

    def close(self) -> None:
        """Kill every tracked process (SIGTERM to its group, SIGKILL after :data:`KILL_GRACE` s), then delete
        this run's namespaces. Never raises: failures are logged and the rest goes on. Idempotent."""
        for proc, grouped in self._procs:
            _signal(proc, grouped, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        for proc, grouped in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                _signal(proc, grouped, signal.SIGKILL)  # whatever it left behind in its group
            except subprocess.TimeoutExpired:
                _signal(proc, grouped, signal.SIGKILL)
                try:
                    proc.wait(timeout=KILL_GRACE)
                except subprocess.TimeoutExpired:
                    log.error("process %s in the LAN %s survived SIGKILL", proc.pid, self.prefix)
            except Exception:  # teardown goes on past anything
                log.exception("waiting for process %s", proc.pid)
        self._procs.clear()
        for ns in reversed(self._namespaces):
            try:
                _ip("netns", "delete", ns)
            except Exception as exc:
                log.error("cannot delete namespace %s: %s", ns, getattr(exc, "stderr", b"") or exc)
        self._namespaces.clear()
        Lan._subnets_in_use.discard(self.subnet)
        try:  # anything of this run left behind, e.g. by a failure halfway through host()
            leftovers = [ns for ns in netns_names() if ns.startswith(self.prefix + "-")]
        except Exception as exc:
            log.error("cannot list namespaces: %s", exc)
            leftovers = []
        for ns in leftovers:
            try:
                _ip("netns", "delete", ns)
            except Exception as exc:
                log.error("cannot delete namespace %s: %s", ns, exc)


def _signal(proc: subprocess.Popen[bytes], grouped: bool, sig: signal.Signals) -> None:
    """Send ``sig`` to ``proc``'s process group when it leads one (its children too), else to ``proc`` alone."""
    try:
        if grouped:
            os.killpg(proc.pid, sig)  # the group outlives its leader while children remain
        elif proc.poll() is None:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass
    except Exception:
        log.exception("signalling process %s", proc.pid)
