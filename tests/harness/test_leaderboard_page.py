"""The HTML page and its figures: a table of contents whose links land, the viewport meta, tables that scroll in
their own box, SVG figures with a fixed colour per method, seed bands and whole-number ticks on whole-number axes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssl_bench.harness.record.leaderboard import publish
from ssl_bench.harness.record.plots import COLOURS, palette
from ssl_bench.harness.record.report import Heading, Table, Text, to_html
from tests.harness.test_results_leaderboard import row


def figure_rows() -> list[dict]:
    """Two methods and a random init over three pretraining sizes and two seeds (bands), kNN and linear, on a
    second study too: a page with several figures per method."""
    rows = []
    for benchmark in ("b", "c"):
        for label, method, base in (("SimCLR", "simclr", 50.0), ("BYOL", "byol", 45.0), ("Random init",
                                                                                         "random_init", 30.0)):
            for size in (1000, 2000, 4000):
                for seed in (0, 1):
                    for evaluator in ("knn", "linear"):
                        value = base + size / 1000 + seed + (evaluator == "linear")
                        r = row(label, method, seed, "top1", value, evaluator=evaluator,
                                key=f"{benchmark}-{label}-{size}-{seed}-{evaluator}")
                        rows.append(r | {"benchmark": benchmark, "pretrain_dataset": f"cifar10[{size}]",
                                         "pretrain_key": f"{benchmark}-{label}-{size}-{seed}",
                                         "pretrain_epoch_losses": [3.0 - seed, 2.0, 1.5 + seed / 10]})
    return rows


@pytest.fixture
def page(tmp_path: Path) -> Path:
    pytest.importorskip("matplotlib", reason="figures need the plots extra (matplotlib)")
    html = tmp_path / "lb" / "index.html"
    publish(figure_rows(), title="T", output=tmp_path / "lb" / "README.md", html=html)
    return html


def test_viewport_meta_and_every_table_scrolls_in_its_box(page: Path):
    text = page.read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    tables = text.count("<table>")
    assert tables >= 4 and text.count('<div class="scroll"><table>') == tables
    assert ".scroll{overflow-x:auto" in text


def test_the_table_of_contents_links_every_section_and_every_link_lands(page: Path):
    text = page.read_text()
    toc = re.search(r'<nav class="toc">(.*?)</nav>', text, flags=re.S)
    assert toc is not None and text.index("<nav") < text.index("<h2>")  # above the first study
    links = re.findall(r'href="#([^"]+)"', toc[1])
    ids = re.findall(r'<section id="([^"]+)">', text)
    assert len(ids) == len(set(ids))  # unique anchors (two studies each have a "Summary" and "Trends")
    assert set(links) <= set(ids) and {"b", "b-summary", "b-trends", "c", "c-summary"} <= set(links)
    h2_h3 = re.findall(r"<h([23])>", text)
    assert len(links) == len(h2_h3)


def test_a_page_of_one_section_has_no_table_of_contents():
    assert "<nav" not in to_html([Heading(1, "T"), Heading(2, "only"), Text("x")], "T")
    two = to_html([Heading(1, "T"), Heading(2, "a"), Heading(3, "a1"), Heading(2, "b")], "T")
    assert re.search(r'<li><a href="#a">a</a><ul><li><a href="#a-a1">a1</a></li></ul></li>', two)
    assert two.count("<section") == two.count("</section>") == 3


def test_table_cells_bold_and_blocks_in_html():
    page = to_html([Table(["Method", "top1"], [["A", "70.00"], ["B", "60.00"], ["R", "30.00"]],
                          bold=frozenset({(0, 1)}), groups=((2, "Baselines"),))], "T")
    assert '<td class="num"><b>70.00</b></td>' in page and '<td class="num">60.00</td>' in page
    assert '<tr class="group"><th colspan="2">Baselines</th></tr>\n<tr><td>R</td>' in page


def svgs(page: Path) -> dict[str, str]:
    folder = page.parent / "figures"
    return {p.name: p.read_text() for p in sorted(folder.glob("*.svg"))}


LINE = re.compile(r'<g id="line-([a-z0-9-]+?)-\d+">\s*<path [^>]*?style="[^"]*?stroke: (#[0-9a-f]{6})', flags=re.S)


def test_figures_are_svg_and_both_documents_reference_them(page: Path):
    figures = svgs(page)
    assert len(figures) >= 6 and not list((page.parent / "figures").glob("*.png"))
    markdown, text = (page.parent / "README.md").read_text(), page.read_text()
    for name in figures:
        assert f"figures/{name}" in markdown and f'src="figures/{name}"' in text


def test_a_method_has_one_colour_in_every_figure_and_methods_differ(page: Path):
    seen: dict[str, set[str]] = {}
    for svg in svgs(page).values():
        for method, colour in LINE.findall(svg):
            seen.setdefault(method, set()).add(colour)
    assert {"simclr", "byol"} <= set(seen)  # (an untrained encoder has no pretraining axis: no line)
    assert all(len(colours) == 1 for colours in seen.values()), seen
    assert len({c for colours in seen.values() for c in colours}) == len(seen)
    expected = palette(["SimCLR", "BYOL", "Random init"])  # sorted labels of the page index the palette
    assert seen["simclr"] == {expected["SimCLR"]} and seen["byol"] == {expected["BYOL"]}


def test_palette_is_stable_and_cycles():
    assert palette(["b", "a"]) == palette(["a", "b", "a"]) == {"a": COLOURS[0], "b": COLOURS[1]}
    many = palette(f"m{i:02d}" for i in range(len(COLOURS) + 1))
    assert many[f"m{len(COLOURS):02d}"] == COLOURS[0] and len(set(many.values())) == len(COLOURS)


def test_curves_have_seed_bands_and_whole_number_ticks(page: Path):
    figures = svgs(page)
    loss = figures["b-pretraining-loss.svg"]
    assert "FillBetweenPolyCollection" in loss or "PolyCollection" in loss  # seeds 0 and 1 differ
    ticks = re.findall(r'<g id="xtick_\d+">.*?<text[^>]*>([^<]*)</text>', loss, flags=re.S)
    assert ticks == ["1", "2", "3"]
    size = next(svg for name, svg in figures.items() if name.startswith("b-knn") and "set-size" in name)
    ticks = re.findall(r'<g id="xtick_\d+">.*?<text[^>]*>([^<]*)</text>', size, flags=re.S)
    assert ticks == ["1000", "2000", "4000"]  # a tick at each pretraining size, written plainly


def test_legend_text_is_readable_and_below_the_axes(page: Path):
    svg = svgs(page)["b-pretraining-loss.svg"]
    start = svg.index('<g id="legend_1">')
    legend = svg[start:svg.index("<defs>", start)]
    sizes = {float(s) for s in re.findall(r"font-size: ([\d.]+)px", legend)}
    assert sizes and min(sizes) >= 9
    ticks_bottom = max(float(y) for y in re.findall(r'<g id="xtick_\d+">.*?<text[^>]* y="([\d.]+)"', svg, flags=re.S))
    legend_top = min(float(y) for y in re.findall(r'<text[^>]* y="([\d.]+)"', legend))
    assert legend_top > ticks_bottom  # under the axis and its tick labels, not over the data


def test_same_rows_same_figure_bytes(tmp_path: Path):
    pytest.importorskip("matplotlib", reason="figures need the plots extra (matplotlib)")
    for out in ("one", "two"):
        publish(figure_rows(), title="T", output=tmp_path / out / "README.md")
    one, two = (sorted((tmp_path / d / "figures").glob("*.svg")) for d in ("one", "two"))
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
