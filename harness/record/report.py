"""A document as a list of blocks, rendered to Markdown or to one static HTML page.

The leaderboard builds its content once (headings, lines of text, tables, images) and writes it in
both formats, so the README and the HTML page never disagree. Headings, table cells and image alt texts
are plain text: each renderer escapes them (a label cannot inject HTML, a heading or a table column).
:class:`Text` is one line of inline Markdown (bold, code spans, backslash escapes): whoever builds one
escapes what they interpolate with :func:`md_escape` (plain text) or :func:`md_inline` (a user's Markdown).
A :class:`Table` may mark cells bold, start titled blocks of rows (the baselines) and group its columns.

The HTML page reads on a phone as on a desktop: a viewport meta, a table of contents linking a ``<section>`` per
heading, tables that scroll sideways inside their own box, figures scaled to the width.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Iterable, Iterator
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
    bold: frozenset[tuple[int, int]] = frozenset()
    """(row, column) of the cells shown in bold (the best value of a column)."""
    groups: tuple[tuple[int, str], ...] = ()
    """(row, title): a block of rows titled ``title`` starts at row ``row`` (the baselines, below the methods)."""
    spans: tuple[tuple[str, int], ...] = ()
    """Column groups over the headers, left to right: (title, number of columns) covering every column; '' untitled.
    Markdown has one header row: a group's title prefixes its headers there."""

    def without(self, names: Collection[str]) -> Table:
        """This table less the columns headed ``names`` (the bold cells and the column groups follow)."""
        keep = [i for i, h in enumerate(self.headers) if h not in names]
        moved = {old: new for new, old in enumerate(keep)}
        spans, start = [], 0
        for title, width in self.spans:
            kept = sum(1 for i in range(start, start + width) if i in moved)
            start += width
            if kept:
                spans.append((title, kept))
        return Table([self.headers[i] for i in keep], [[row[i] for i in keep] for row in self.rows],
                     frozenset((r, moved[c]) for r, c in self.bold if c in moved), self.groups, tuple(spans))


def empty_columns(table: Table) -> list[str]:
    """The headers, the first column's aside, of the columns with no cell filled in (nothing to say there)."""
    return [h for i, h in enumerate(table.headers) if i and not any(row[i] for row in table.rows)]


def constant_columns(table: Table, names: Iterable[str], blank: Collection[str] = ("", "none")) -> dict[str, str]:
    """The columns of ``names`` whose cells, blanks aside, all hold one value (and at least one does): name -> value.
    They say the same for every row: a line above the table can say it once (:meth:`Table.without`)."""
    out = {}
    for name in names:
        if name in table.headers:
            i = table.headers.index(name)
            values = {row[i] for row in table.rows} - set(blank)
            if len(values) == 1:
                out[name] = values.pop()
    return out


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
            out.append(_markdown_table(b))
        else:
            out.append(f"![{md_escape(b.alt, brackets=True)}]({quote(b.path)})")
        out.append("")
    return "\n".join(out)


def _span_titles(table: Table) -> list[str]:
    """The column group's title of every column ('' where none)."""
    titles = [title for title, width in table.spans for _ in range(width)]
    return titles + [""] * (len(table.headers) - len(titles))


def _markdown_table(table: Table) -> str:
    """A GitHub table: bold cells in ``**``, a block's title as a row of its own, column groups' titles prefixed."""
    headers = [md_escape(f"{group} {h}" if group else h) for group, h in zip(_span_titles(table), table.headers)]
    starts = dict(table.groups)
    rows: list[list[str]] = []
    for i, row in enumerate(table.rows):
        if i in starts:
            rows.append([f"**{md_escape(starts[i])}**"] + [""] * (len(headers) - 1))
        rows.append([f"**{md_escape(c)}**" if c and (i, j) in table.bold else md_escape(c) for j, c in enumerate(row)])
    return str(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
body{line-height:1.4}
h1,h2,h3,h4,p,li,code{overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;margin:0.5em 0 1.5em}
table{border-collapse:collapse;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;white-space:nowrap}
th{background:#f3f3f3}td.num{text-align:right}
tr.group th{background:#fafafa;font-style:italic;font-weight:normal}
th.span{text-align:center}
img{display:block;max-width:100%;height:auto;margin:0.5em 0 1em}
nav.toc{background:#fafafa;border:1px solid #ddd;padding:0.3em 1em;margin:1em 0}
nav.toc ul{margin:0.2em 0;padding-left:1.2em}
p.note{background:#f7f7ff;border-left:4px solid #88a;padding:0.4em 0.8em}"""
VIEWPORT = '<meta name="viewport" content="width=device-width, initial-scale=1">'
NUMBER = re.compile(r"^[\[(]?[-+]?\d")
"""A cell that reads as a number (right-aligned): '45.42 ± 1.57', '[70.10, 74.50]', '12 s'."""


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page (styles inline; images referenced by relative path), readable on a phone.

    Every heading below the page's title opens a ``<section>`` with an ``id``, and a table of contents (levels 2
    and 3) links them where the page has more than one; tables scroll inside their box (``div.scroll``), so a
    wide table never widens the page.
    """
    ids = _anchors(blocks)
    body: list[str] = []
    toc = _toc(blocks, ids)
    open_levels: list[int] = []
    for i, b in enumerate(blocks):
        if isinstance(b, Heading):
            while open_levels and open_levels[-1] >= b.level:
                open_levels.pop()
                body.append("</section>")
            if b.level == 2 and toc:
                body.append(toc)
                toc = ""
            if b.level > 1:
                body.append(f'<section id="{ids[i]}">')
                open_levels.append(b.level)
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            cls = ' class="note"' if b.text.startswith("**Finding") else ""
            body.append(f"<p{cls}>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        else:
            body.append(f'<img src="{html.escape(b.path)}" alt="{html.escape(b.alt)}">')
    body += ["</section>"] * len(open_levels) + ([toc] if toc else [])
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{VIEWPORT}"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def anchor(text: str) -> str:
    """A heading's text as an id: lower case letters, digits and hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _anchors(blocks: list[Block]) -> dict[int, str]:
    """Block index of each heading below level 1 -> a unique id: its own text after its parents' (level 2 and on:
    ``quickstart-knn-on-shapes-all-labels``), numbered where two would be equal."""
    ids: dict[int, str] = {}
    seen: set[str] = set()
    path: list[tuple[int, str]] = []
    for i, b in enumerate(blocks):
        if not isinstance(b, Heading) or b.level < 2:
            continue
        path = [(level, text) for level, text in path if level < b.level] + [(b.level, anchor(b.text))]
        base = "-".join(text for _, text in path)
        found, n = base, 2
        while found in seen:
            found, n = f"{base}-{n}", n + 1
        seen.add(found)
        ids[i] = found
    return ids


def _toc(blocks: list[Block], ids: dict[int, str]) -> str:
    """A nested list of links to the headings of levels 2 and 3; '' where there are fewer than two."""
    entries = [(b.level, ids[i], b.text) for i, b in enumerate(blocks)
               if isinstance(b, Heading) and b.level in (2, 3)]
    if len(entries) < 2:
        return ""
    out = ['<nav class="toc"><b>Contents</b><ul>']
    item = sub = False  # an item of level 2 is open; a list of level 3 in it is open
    for level, ident, text in entries:
        link = f'<a href="#{ident}">{html.escape(text)}</a>'
        if level == 2:
            out += (["</ul>"] if sub else []) + (["</li>"] if item else []) + [f"<li>{link}"]
            item, sub = True, False
        else:
            out += ([] if item else ["<li>"]) + ([] if sub else ["<ul>"]) + [f"<li>{link}</li>"]
            item = sub = True
    out += (["</ul>"] if sub else []) + (["</li>"] if item else []) + ["</ul></nav>"]
    return "".join(out)


def _html_table(table: Table) -> str:
    """The table in a box that scrolls sideways; numbers right-aligned, bold cells in ``<b>``, blocks titled."""
    cols = len(table.headers)
    head = []
    if table.spans:
        head.append("<tr>" + "".join(f'<th colspan="{w}" class="span">{html.escape(t)}</th>' for t, w in table.spans)
                    + "</tr>")
    head.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
    starts = dict(table.groups)
    body = []
    for i, row in enumerate(table.rows):
        if i in starts:
            body.append(f'<tr class="group"><th colspan="{cols}">{html.escape(starts[i])}</th></tr>')
        cells = []
        for j, c in enumerate(row):
            text = f"<b>{html.escape(c)}</b>" if c and (i, j) in table.bold else html.escape(c)
            cells.append(f'<td class="num">{text}</td>' if NUMBER.match(c) else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table>\n<thead>' + "".join(head) + "</thead>\n<tbody>\n" + "\n".join(body)
            + "\n</tbody>\n</table></div>")


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
