"""The example notebook runs as a user would run it (nbclient, a real kernel, tiny data)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    assert os.environ["PRETEXTLAB_THREADS"] == "1"  # the kernel inherits the suite's one thread and tmp cache
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = ["".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("report.md" in o for o in outputs)
    assert any("macro-F1" in o and "vs scratch" in o for o in outputs)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the report's figures are shown inline"
    assert (tmp_path / "quickstart-study" / "summary.json").exists()
