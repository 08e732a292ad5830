"""The main job on the embedded default: two devices sync LoCoMo through a folder mailbox.

The mailbox is a plain folder, as Dropbox, Syncthing or a USB stick would carry it. Run from the checkout:

    .venv/bin/python examples/two_devices_folder.py [--workdir DIR]

Exits non-zero when the devices did not converge or the mailbox holds readable text.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from demo import console, print_report, run_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep the vaults and the mailbox here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crdtsync-demo-") as tmp:
        workdir = args.workdir or Path(tmp)
        mailbox = workdir / "shared-folder"
        result = run_demo(workdir, mailbox.as_uri(), mailbox_folder=mailbox)
    print_report(result)
    ok = result["converged"] and result["level0_stayed_home"] and not result["plaintext_in_mailbox"]
    console.print("[green]converged[/]" if ok else "[red]did not converge[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
