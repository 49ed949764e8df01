"""The report as one markdown text, and report.html made from that text, so the two cannot drift apart.

report.md links its figures as figures/NAME.png, relative to itself, so the study folder (or report.md
with figures/) can be copied into a repository and render on GitHub, or be pasted into a README beside
figures/; long dumps go into a collapsed <details> block (blank lines inside, so GitHub renders the
markdown in it). report.html is the same text through Python-Markdown (md_in_html renders that block's
markdown too) with the figures inlined as base64 data: URIs, a single file that opens anywhere.

Every string from the study's files or from the user goes into the text through md(), so that a name like
`<script>` or `a_b*c` is shown as written, in both files, and makes no tag and no Markdown.
"""

from __future__ import annotations

import base64
import html as html_text
import re
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote
from xml.etree.ElementTree import Element

import markdown
from markdown.treeprocessors import Treeprocessor

from ..layout import FIGURES

CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
       "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;"
       "text-align:left}th{background:#f3f3f3}img{max-width:100%}em{color:#555}"
       "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:0.85em}code{background:#f6f6f6}"
       "details{margin:1em 0}summary{cursor:pointer;font-weight:600}")
EXTENSIONS = ["tables", "fenced_code", "md_in_html"]

# What md() writes for each character: Markdown's own behind a backslash, HTML's as entities (Python-Markdown and
# GitHub show both literally), anything that would end the line or block as a space.
_LITERAL = {**{c: "\\" + c for c in "\\`*_[]|"}, "&": "&amp;", "<": "&lt;", ">": "&gt;",
            **{c: " " for c in [*map(chr, range(32)), "\x7f", "\x85", "\u2028", "\u2029"]}}
_TRANSLATE = str.maketrans(_LITERAL)
_NOT_IN_CODE = re.compile(r"[`|<>&\x00-\x1f\x7f\x85\u2028\u2029]")  # what a code span cannot hold as written


def md(value: object, code: bool = False) -> str:
    """A string from the study's files or from the user (class, arm, file and folder names, settings) as report.md
    writes it: shown literally, on one line, making no Markdown and no HTML, so that a class folder named
    `<script>` stays text in report.md and in report.html. code=True: as a code span (run and folder names),
    unless it holds a character a code span would show wrongly, then as escaped text."""
    text = str(value)
    if code and text.strip() and not _NOT_IN_CODE.search(text):
        return f"`{text}`"
    return text.translate(_TRANSLATE)


class Doc:
    """The report's markdown, block by block, and the figures it shows (what figures/ keeps)."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.figures: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append("#" * level + " " + text)

    def para(self, text: str) -> None:
        self.blocks.append(text)

    def bullets(self, items: Iterable[str]) -> None:
        self.blocks.append("\n".join(f"- {item}" for item in items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        def cell(s: str) -> str:  # a "|" not already escaped by md() would end the cell
            return re.sub(r"(?<!\\)((?:\\\\)*)\|", r"\1\\|", str(s))

        self.blocks.append("\n".join(["| " + " | ".join(map(cell, header)) + " |",
                                      "|" + "|".join(["---"] * len(header)) + "|",
                                      *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]))

    def figure(self, name: str, caption: str) -> None:
        """figures/NAME (a link relative to report.md, URL-quoted: a task's name is part of NAME) with its caption
        below it, as the image's alt text too."""
        self.figures.append(name)
        alt = caption.replace("[", "(").replace("]", ")")
        self.blocks.append(f"![{alt}]({FIGURES}/{quote(name)})\n\n*{caption}*")

    def code(self, text: str) -> None:
        self.blocks.append(fenced(text))

    def details(self, summary: str, *blocks: str) -> None:
        """Markdown blocks collapsed under a one-line summary, shown when the reader opens it."""
        self.blocks.append(f'<details markdown="1">\n<summary>{html_text.escape(summary)}</summary>\n\n'
                           + "\n\n".join(blocks) + "\n\n</details>")

    def markdown(self) -> str:
        return "\n\n".join(self.blocks) + "\n"


def fenced(text: str, language: str = "") -> str:
    """A fenced code block: text shown verbatim."""
    return f"```{language}\n{text}\n```"


class _InlineFigures(Treeprocessor):
    """Every <img> of figures/NAME gets the PNG itself as a data: URI, so report.html needs no folder beside it."""

    def __init__(self, md: markdown.Markdown, fig_dir: Path) -> None:
        super().__init__(md)
        self.fig_dir = fig_dir

    def run(self, root: Element) -> None:
        prefix = f"{FIGURES}/"
        for img in root.iter("img"):
            src = img.get("src", "")
            name = unquote(src.removeprefix(prefix))
            if src.startswith(prefix) and "/" not in name:  # a file of figures/, never one elsewhere
                data = base64.b64encode((self.fig_dir / name).read_bytes()).decode()
                img.set("src", f"data:image/png;base64,{data}")


def html(markdown_text: str, fig_dir: Path, title: str) -> str:
    """report.html: report.md's text rendered by Python-Markdown (tables, fenced code, markdown inside
    <details>), figures inlined."""
    md = markdown.Markdown(extensions=EXTENSIONS, output_format="html")
    md.treeprocessors.register(_InlineFigures(md, fig_dir), "inline_figures", 5)  # after "inline" made the <img>s
    body = md.convert(markdown_text)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html_text.escape(title)}"
            f"</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
