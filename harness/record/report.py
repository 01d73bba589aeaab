"""A document as a list of blocks, rendered to Markdown or to one static HTML page.

The leaderboard builds its content once (headings, lines of text, tables, images) and writes it in
both formats, so the README and the HTML page never disagree.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from tabulate import tabulate


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: str
    """Relative to the document."""
    alt: str


Block = Heading | Text | Table | Image


def to_markdown(blocks: list[Block]) -> str:
    """GitHub-flavoured Markdown; a blank line after every block."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append(str(tabulate(b.rows, headers=b.headers, tablefmt="github", disable_numparse=True)))
        else:
            out.append(f"![{b.alt}]({b.path})")
        out.append("")
    return "\n".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:560px;margin:0.5em 1em 1em 0}
p.note{background:#f7f7ff;border-left:4px solid #88a;padding:0.4em 0.8em}"""


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page (styles inline; images referenced by relative path)."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            cls = ' class="note"' if b.text.startswith("**Finding") else ""
            body.append(f"<p{cls}>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            body.append(str(tabulate(b.rows, headers=b.headers, tablefmt="html", disable_numparse=True)))
        else:
            body.append(f'<img src="{html.escape(b.path)}" alt="{html.escape(b.alt)}">')
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Escape, then render Markdown's **bold** and `code` spans."""
    out, parts = [], html.escape(text).split("`")
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{part}</code>")
        else:
            bold = part.split("**")
            out.append("".join(f"<b>{s}</b>" if j % 2 else s for j, s in enumerate(bold)))
    return "".join(out)
