"""The README's main job and its S3 twin run as a user runs them: each example in a subprocess on the LoCoMo
corpus from ``../shared/data/locomo``. Each exits non-zero unless the devices converged, level 0 stayed home and
the mailbox holds no readable text; the report it prints is checked here too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("script", "mailbox_row"), [("two_devices_folder.py", "plaintext_in_mailbox"),
                                                     ("two_devices_s3.py", "plaintext_in_bucket")])
def test_example_converges_two_devices_on_locomo(script: str, mailbox_row: str, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                        "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    report = {line.split("│")[1].strip(): line.split("│")[2].strip()
              for line in run.stdout.splitlines() if line.count("│") == 3}
    assert report["converged"] == "True" and report["same_conflicts_on_both"] == "True"
    assert report["conflicts_surfaced"] == "2" and report[mailbox_row] == "[]"
    assert int(report["memories_A"]) > 5882 and report["level0_stayed_home"] == "True"
    assert run.stdout.rstrip().endswith("converged") and "did not converge" not in run.stdout
