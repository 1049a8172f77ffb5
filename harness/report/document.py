"""A report as plain data (sections of paragraphs, tables, figures, code) and its two
renderings: Markdown with linked figures, and one self-contained HTML file with the PNGs
embedded as base64 data URIs (opens offline, mails as one attachment)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

FIGURES_DIR = "figures"


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells (numbers are formatted once, by the caller)."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class FigureRef:
    """A figure saved as ``figures/<stem>.png`` and ``.svg``."""

    stem: str
    caption: str


@dataclass(frozen=True)
class Code:
    """A preformatted block (e.g. the composed config as YAML)."""

    text: str
    language: str = ""


Block = str | Table | FigureRef | Code  # a str is one paragraph; `backticks` mark code


@dataclass
class Section:
    """A titled list of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    """The whole report."""

    title: str
    sections: list[Section] = field(default_factory=list)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    """Render as GitHub-flavoured Markdown; figures link to ``figures/<stem>.png``."""
    out = [f"# {doc.title}", ""]
    for section in doc.sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                if block.caption:
                    out += [f"**{block.caption}**", ""]
                out.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
                out.append("|" + "---|" * len(block.header))
                out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, FigureRef):
                out += [
                    f"![{block.caption}]({FIGURES_DIR}/{block.stem}.png)",
                    "",
                    f"*{block.caption}* ([SVG]({FIGURES_DIR}/{block.stem}.svg))",
                ]
            elif isinstance(block, Code):
                out += [f"```{block.language}", block.text.rstrip("\n"), "```"]
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)  # [text](url)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3}td{font-variant-numeric:tabular-nums}
img{max-width:100%}figure{margin:1em 0}figcaption{font-style:italic;color:#555}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:85%}
"""


def to_html(doc: Document, figures: Path) -> str:
    """Render as one self-contained HTML page; PNGs are read from ``figures`` and embedded.

    Raises:
        FileNotFoundError: a referenced figure was not written.
    """
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for section in doc.sections:
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                if block.caption:
                    out.append(f"<p><strong>{_inline(block.caption)}</strong></p>")
                out.append(
                    "<table><thead><tr>"
                    + "".join(f"<th>{_inline(h)}</th>" for h in block.header)
                    + "</tr></thead><tbody>"
                )
                out += [
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                    for row in block.rows
                ]
                out.append("</tbody></table>")
            elif isinstance(block, FigureRef):
                data = base64.b64encode((figures / f"{block.stem}.png").read_bytes()).decode()
                out.append(
                    f'<figure><img alt="{html.escape(block.caption)}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
                )
            elif isinstance(block, Code):
                out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            elif block.startswith("- "):  # a Markdown bullet list, one item per line
                items = [line[2:] for line in block.splitlines() if line.startswith("- ")]
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            else:
                out.append(f"<p>{_inline(block)}</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
