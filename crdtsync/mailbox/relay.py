"""What one sync found and did in one relay: :class:`RelayView` while it runs, :class:`SyncReport` after."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crdtsync.errors import CrdtsyncError

if TYPE_CHECKING:
    from crdtsync.mailbox.ports import ObjectStore


@dataclass
class SyncReport:
    """What one sync moved through one relay: objects and bytes each way, object operations, memories changed
    here, conflicts now in the vault, objects put back (``healed``: keys a relay lacked or held older),
    errors (``{device, code, message}``; a wait on an entry no relay supplied also names ``seq`` and the
    devices that acknowledged it, ``holders``) and warnings (same shape: what was found wrong and dealt with,
    or stopped nothing: a header put back, a folder of no registered device whose head does not open)."""

    relay: str
    objects_up: int = 0
    bytes_up: int = 0
    objects_down: int = 0
    bytes_down: int = 0
    operations: int = 0
    memories_changed: set[str] = field(default_factory=set)
    conflicts: int = 0
    healed: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``sync --json`` prints for this relay."""
        return {
            "relay": self.relay,
            "up": {"objects": self.objects_up, "bytes": self.bytes_up},
            "down": {"objects": self.objects_down, "bytes": self.bytes_down},
            "operations": self.operations,
            "memories_changed": len(self.memories_changed),
            "conflicts": self.conflicts,
            "healed": len(self.healed),
            "errors": self.errors,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class RelayView:
    """One relay as a sync found it: its listing (key -> (size, mark)) and the heads of the authors in it
    (author -> (seq, n)), and the authors whose head there went back since this device last read it."""

    name: str
    store: ObjectStore
    report: SyncReport
    objects: dict[str, tuple[int, str]] = field(default_factory=dict)
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)
    rolled_back: set[str] = field(default_factory=set)
    usable: bool = True

    def warn(self, error: CrdtsyncError, device: str = "", **extra: Any) -> None:
        """Report ``error`` in this relay's report as a warning: it stopped nothing."""
        self.report.warnings.append({"device": device, "code": error.code, "message": error.message, **extra})

    def fail(self, error: CrdtsyncError, device: str = "", **extra: Any) -> None:
        """Report ``error`` (about ``device``'s objects, or the whole relay when empty) in this relay's report."""
        self.report.errors.append({"device": device, "code": error.code, "message": error.message, **extra})
