"""answers.md and report.md paste into a repository: every image link is relative and resolves on disk, and
the configuration dump sits collapsed at the end, rendered the same way by report.html."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from fabricated import make_study

from pretextlab.report import write_report


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    """A study's report, with its pages and figures/ then copied into a repository's docs/ folder."""
    study = make_study(tmp_path_factory.mktemp("study") / "demo")
    write_report(study)
    docs = tmp_path_factory.mktemp("repo") / "docs"
    docs.mkdir()
    for page in ("report.md", "report.html", "answers.md", "answers.html"):
        shutil.copy(study / page, docs / page)
    shutil.copytree(study / "figures", docs / "figures")
    return docs


def test_every_image_link_is_relative_and_resolves(copied: Path):
    md = (copied / "report.md").read_text() + (copied / "answers.md").read_text()  # the two pages share figures/
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all(link.startswith("figures/") and link.endswith(".png") for link in links)
    assert all((copied / link).is_file() for link in links), [link for link in links if not (copied / link).exists()]
    assert sorted(p.name for p in (copied / "figures").iterdir()) == sorted({Path(x).name for x in links})
    assert "figures/" not in (copied / "report.html").read_text()  # the HTML copy carries its figures inline
    assert "figures/" not in (copied / "answers.html").read_text()


def test_the_configuration_is_collapsed_at_the_end(copied: Path):
    md = (copied / "report.md").read_text()
    block = md[md.index("<details"):]
    assert block.startswith('<details markdown="1">\n<summary>Configuration</summary>\n\n')
    assert "```json\n{" in block and block.rstrip().endswith("```\n\n</details>")
    assert md.count("```") == 2  # the only code block: the dump is out of the body
    page = (copied / "report.html").read_text()
    inside = page[page.index("<details>"):page.index("</details>")]
    assert "<summary>Configuration</summary>" in inside and '<pre><code class="language-json">{' in inside
