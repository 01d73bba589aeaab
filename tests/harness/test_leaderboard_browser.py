"""The leaderboard page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven
by selenium) renders a page generated from synthetic rows, figures included, at a phone's width (420 px) and a
desktop's (1,400 px): the page body never scrolls sideways (a wide table scrolls inside its own box) and every
image has loaded."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ssl_bench.harness.record.leaderboard import publish
from tests.harness.test_leaderboard_page import figure_rows
from tests.harness.test_results_leaderboard import row

WIDTHS = (420, 1400)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def wide_rows() -> list[dict]:
    """A table wider than a phone: a long label and a dozen metric columns."""
    label = "SimCLR with a long descriptive label (temperature 0.5, 2x2 jigsaw views)"
    metrics = ["top1", "top2", "top5", "auc", "mean_class_acc", *(f"extra_metric_{i}" for i in range(8))]
    return [row(label, "simclr", 0, m, 50.0 + i, key=f"wide-{m}") | {"benchmark": "wide"}
            for i, m in enumerate(metrics)]


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")
    binary = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium chromium-driver; .ci/run does)")
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.skip("no chromedriver binary on PATH (Debian: apt-get install chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    options.binary_location = binary
    browser = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("matplotlib", reason="the page's figures need the plots extra (matplotlib)")
    folder = tmp_path_factory.mktemp("page")
    notes = folder / "notes.toml"
    notes.write_text('[b]\nstudy = "' + "A long finding that has to wrap on a narrow screen. " * 12 + '"\n')
    html = folder / "index.html"
    publish(figure_rows() + wide_rows(), title="T", html=html, notes=notes)
    return html


def load(driver: Any, page: Path, width: int) -> None:
    driver.set_window_size(width, 900)
    driver.get(page.as_uri())  # returns after the load event: every image fetched (or failed)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_never_scrolls_sideways(driver: Any, page: Path, width: int):
    load(driver, page, width)
    inner = driver.execute_script("return window.innerWidth")
    assert inner <= width
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner, f"the page is {scroll} px wide in a {inner} px window"
    boxes = driver.execute_script(
        "return Array.from(document.querySelectorAll('div.scroll')).map(d => [d.scrollWidth, d.clientWidth])")
    assert boxes and all(client <= inner for _, client in boxes)
    if width == 420:  # the wide table is wider than the phone and scrolls in its box instead of the page
        assert any(scroll_w > client for scroll_w, client in boxes)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_image_loads(driver: Any, page: Path, width: int):
    load(driver, page, width)
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) >= 6
    broken = [src for src, complete, natural in images if not (complete and natural > 0)]
    assert not broken, f"images not loaded: {broken}"
    assert all(src.endswith(".svg") for src, _, _ in images)
    shown = driver.execute_script(
        "return Array.from(document.images).map(i => i.getBoundingClientRect().right)")
    assert max(shown) <= driver.execute_script("return window.innerWidth")  # scaled to fit, not cut off
