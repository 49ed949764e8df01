"""report.md as the Doc writes it, and report.html made from that text by Python-Markdown, figures inlined."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import markdown
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pretextlab.report.render import EXTENSIONS, Doc, fenced, html


def _png(path: Path) -> bytes:
    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=20)
    return path.read_bytes()


def test_html_is_python_markdown_of_the_report_text(tmp_path: Path):
    png = _png(tmp_path / "figures" / "curve.png")
    doc = Doc()
    doc.heading(1, "Title")
    doc.para("A **bold** claim about `code`.")
    doc.table(["quantity", "value"], [["a|b", "1"]])
    doc.figure("curve.png", "A caption")
    text = doc.markdown()
    assert "| a\\|b | 1 |" in text and "![A caption](figures/curve.png)\n\n*A caption*" in text
    assert doc.figures == ["curve.png"]

    page = html(text, tmp_path / "figures", "a title")
    assert "<table>" in page and "<td>a|b</td>" in page
    assert "<strong>bold</strong>" in page and "<code>code</code>" in page
    srcs = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(s) for s in srcs] == [png]
    assert 'src="figures/' not in page and "<title>a title</title>" in page
    inlined = text.replace("](figures/curve.png)", f"](data:image/png;base64,{base64.b64encode(png).decode()})")
    assert markdown.markdown(inlined, extensions=EXTENSIONS, output_format="html") in page


def test_details_collapse_markdown_that_github_and_python_markdown_both_render(tmp_path: Path):
    doc = Doc()
    doc.para("Body.")
    doc.details("Configuration", "The **full** configuration:", fenced('{\n  "a": 1\n}', "json"))
    text = doc.markdown()
    # GitHub: an HTML block ends at a blank line, so the markdown inside needs blank lines around it
    assert '<details markdown="1">\n<summary>Configuration</summary>\n\nThe **full** configuration:\n\n```json\n' \
        in text and text.rstrip().endswith("```\n\n</details>")
    page = html(text, tmp_path, "t")
    inside = page[page.index("<details>"):page.index("</details>")]
    assert "<summary>Configuration</summary>" in inside and "<strong>full</strong>" in inside
    assert '<pre><code class="language-json">{\n  &quot;a&quot;: 1\n}' in inside
    assert 'markdown="1"' not in page


def test_a_figure_caption_with_brackets_keeps_a_working_image_link(tmp_path: Path):
    _png(tmp_path / "figures" / "x.png")
    doc = Doc()
    doc.figure("x.png", "Intervals [low, high] over seeds")
    text = doc.markdown()
    assert "![Intervals (low, high) over seeds](figures/x.png)" in text
    assert "*Intervals [low, high] over seeds*" in text
    assert text.count('<img') == 0 and html(text, tmp_path / "figures", "t").count("<img") == 1
