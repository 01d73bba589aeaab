"""A document as a list of blocks, rendered to Markdown or to one static HTML page.

The leaderboard builds its content once (headings, lines of text, tables, images) and writes it in
both formats, so the README and the HTML page never disagree. Headings, table cells and image alt texts
are plain text: each renderer escapes them (a label cannot inject HTML, a heading or a table column).
:class:`Text` is one line of inline Markdown (bold, code spans, backslash escapes): whoever builds one
escapes what they interpolate with :func:`md_escape` (plain text) or :func:`md_inline` (a user's Markdown).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

from tabulate import tabulate


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    """Plain text."""


@dataclass(frozen=True)
class Text:
    text: str
    """One line of inline Markdown: ``**bold**``, ```code```, backslash escapes."""


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    """Plain text cells."""


@dataclass(frozen=True)
class Image:
    path: str
    """Relative to the document."""
    alt: str


Block = Heading | Text | Table | Image


LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
MD_SPECIAL = re.compile(r"[\\`*~|<#]|&(?=#?\w+;)|(?<!\w)_|_(?!\w)")
"""What Markdown would read as syntax in a line of plain text: emphasis and code marks, a table's ``|``, an HTML
tag's ``<``, a heading's ``#``, an entity's ``&``, ``_`` at a word's edge (``mean_class_acc`` stays as it is)."""
LINK = re.compile(r"\][(\[]")


def md_escape(text: str, *, brackets: bool = False) -> str:
    """Plain text as Markdown that shows it as it is, on one line (line breaks become spaces).

    Brackets are escaped where the text could form a link (``](`` or ``][``), and with ``brackets`` (the text
    of a link or an image) where they are unbalanced; elsewhere ``cifar10[10000]`` stays as it is.
    """
    text = MD_SPECIAL.sub(lambda m: "\\" + m[0], LINE_BREAKS.sub(" ", text))
    risky = LINK.search(text) or (brackets and not _balanced(text))
    return re.sub(r"[\[\]]", lambda m: "\\" + m[0], text) if risky else text


def _balanced(text: str) -> bool:
    """Whether every ``]`` closes an earlier ``[`` and every ``[`` is closed (``cifar10[10000]``)."""
    depth = 0
    for c in text:
        depth += (c == "[") - (c == "]")
        if depth < 0:
            return False
    return depth == 0


def md_inline(text: str) -> str:
    """A user's inline Markdown (a note: bold, code spans) made safe: one line, and no raw HTML outside code."""
    return "".join(t.replace("<", "\\<") if kind == "text" else t for kind, t in _tokens(LINE_BREAKS.sub(" ", text)))


CODE_SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")
"""A code span: a run of backticks, then up to the next run of the same length."""


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """Inline Markdown as (kind, source): "code" spans (backticks included), "escape"s (a backslash and the character
    it escapes) and the "text" between them (an unmatched run of backticks is text)."""
    i = start = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in PUNCTUATION:
            token = ("escape", text[i:i + 2])
        elif text[i] == "`":
            m = CODE_SPAN.match(text, i)
            token = ("code", m[0]) if m else ("text", text[i:len(text) - len(text[i:].lstrip("`"))])
        else:
            i += 1
            continue
        if start < i:
            yield "text", text[start:i]
        yield token
        i = start = i + len(token[1])
    if start < len(text):
        yield "text", text[start:]


def to_markdown(blocks: list[Block]) -> str:
    """GitHub-flavoured Markdown; a blank line after every block."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {md_escape(b.text)}")
        elif isinstance(b, Text):
            out.append(LINE_BREAKS.sub(" ", b.text))
        elif isinstance(b, Table):
            out.append(str(tabulate([[md_escape(c) for c in row] for row in b.rows],
                                    headers=[md_escape(h) for h in b.headers], tablefmt="github",
                                    disable_numparse=True)))
        else:
            out.append(f"![{md_escape(b.alt, brackets=True)}]({quote(b.path)})")
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
    """Inline Markdown as HTML: ``**bold**``, code spans and backslash escapes; everything else escaped."""
    out: list[str] = []
    bold = False
    for kind, t in _tokens(text):
        if kind == "code":
            code = t.strip("`")
            code = code[1:-1] if code.startswith(" ") and code.endswith(" ") and code.strip() else code
            out.append(f"<code>{html.escape(code)}</code>")
        elif kind == "escape":
            out.append(html.escape(t[1]))
        else:
            for j, part in enumerate(t.split("**")):
                if j:
                    out.append("</b>" if bold else "<b>")
                    bold = not bold
                out.append(html.escape(part))
    return "".join(out) + ("</b>" if bold else "")


PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
"""What a backslash escapes in Markdown (CommonMark: any ASCII punctuation)."""
