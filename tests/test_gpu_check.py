"""scripts/gpu_check.sh: where no CUDA GPU is visible it says so in one line, writes nothing and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "x.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and lines[0].startswith("gpu_check: "), proc.stdout
    assert proc.stderr == ""
    assert not out.exists()
