"""The report is one-way: it reads what the runs wrote and never imports the training side."""

from __future__ import annotations

import subprocess
import sys

CHECK = ("import pretextlab.report, sys; bad=[m for m in sys.modules if m.split('.')[:2] in (['pretextlab','study'],"
         "['pretextlab','train'],['pretextlab','finetune'],['pretextlab','pretext'])]; assert not bad, bad")


def test_the_report_imports_nothing_of_the_training_side():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
