"""The README (and docs/protocol.md) quote only numbers copied from committed files: their blocks are what
scripts/readme_results.py and scripts/protocol_table.py write from the committed runs, and the README stays
within 200 lines."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
script = runpy.run_path(str(ROOT / "scripts" / "readme_results.py"))


def test_the_results_block_is_copied_from_the_committed_summaries():
    assert script["render"](README) == README, "README's results are stale: run python scripts/readme_results.py"


def test_every_result_number_of_the_readme_is_inside_the_generated_block():
    """Four-decimal results (0.7095, +0.0008) appear only where the script wrote them."""
    outside = README.split(script["BEGIN"])[0] + README.split(script["END"])[1]
    assert not re.findall(r"(?<![\d.])[+−-]?\d\.\d{3,}", outside)


def test_the_block_notices_a_changed_summary(tmp_path):
    """The check can fail: a summary's number edited by hand is a stale README."""
    block = script["block"]()
    assert "+0.0008 [-0.0249, +0.0265], not significant" in block  # docs/study-cifar10 at 10% labels
    edited = README.replace("+0.0008 [-0.0249, +0.0265]", "+0.0108 [-0.0249, +0.0265]", 1)
    assert script["render"](edited) != edited


def test_the_readme_stays_short_and_links_what_exists():
    assert len(README.splitlines()) <= 200
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)\)", README):
        assert (ROOT / link).exists(), link


def test_the_schedule_measurement_is_copied_from_the_committed_runs():
    """docs/protocol.md's table is what scripts/protocol_table.py writes from docs/protocol/'s runs."""
    protocol = runpy.run_path(str(ROOT / "scripts" / "protocol_table.py"))
    page = (ROOT / "docs" / "protocol.md").read_text()
    assert protocol["render"](page) == page, "docs/protocol.md is stale: run python scripts/protocol_table.py"
