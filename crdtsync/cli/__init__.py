"""The ``crdtsync`` command line; :func:`main` is the console-script entry point."""

from crdtsync._hardening import disable_core_dumps
from crdtsync.cli import epoch_commands, keys_commands, lan_commands, sync_commands
from crdtsync.cli.app import app


def main() -> None:
    """Run ``crdtsync`` with ``sys.argv``; exits with the documented exit status. Core dumps are off: a command
    may hold a passphrase, keys or memories."""
    disable_core_dumps()
    app(prog_name="crdtsync")


__all__ = ["app", "epoch_commands", "keys_commands", "lan_commands", "main", "sync_commands"]
