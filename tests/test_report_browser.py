"""The report page as Chromium shows it: everything loads, nothing fails, nothing overflows sideways.

Debian's headless ``chromium`` (installed by the set-up when missing) driven by playwright; a screenshot
at each width goes to the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import CHROMIUM_ARGS, chromium_path
from tests.helpers.report import write_sample_report

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

WIDTHS = (420, 1280)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path, reason = chromium_path()
    if path is None:
        pytest.skip(reason)
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(path), headless=True, args=list(CHROMIUM_ARGS))
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_report(tmp_path_factory.mktemp("report"))


def open_page(browser: Any, url: str, width: int) -> tuple[Any, list[str]]:
    """The page loaded at ``width`` px, and every console error, page error and failed request seen."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.goto(url, wait_until="load")
    return page, problems


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_loads_completely_and_fits_the_width(browser, report_page, width, tmp_path):
    page, problems = open_page(browser, report_page.as_uri(), width)
    images = page.evaluate("""[...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete,
        natural: [i.naturalWidth, i.naturalHeight], declared: [i.width, i.height], alt: i.alt}))""")
    assert [i["src"] for i in images] == [f"grids/{t}.gif" for t in ("fp", "opd", "every2", "cg")]
    for image in images:
        # loaded, at the size the page declares (3x pixels: 3 columns of 32 px plus 2-px gutters, 4 rows)
        assert image["complete"] and image["natural"] == [300, 402] and image["alt"], image
    assert page.evaluate("document.querySelectorAll('video').length") == 0  # the mp4s are linked, not embedded
    sizes = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert sizes[0] <= sizes[1] == width
    # the column labels span exactly the image below them
    for labels, image in page.evaluate("""[...document.querySelectorAll('.grid')].map(g => [
        g.querySelector('.labels').getBoundingClientRect().width,
        g.querySelector('img').getBoundingClientRect().width])"""):
        assert labels == pytest.approx(image, abs=1)
    scroll = page.evaluate("(() => { const s = document.querySelector('#scores .scroll'); "
                           "return [s.scrollWidth, s.clientWidth]; })()")
    assert (scroll[0] > scroll[1]) == (width == 420)  # the wide table scrolls inside its box on a phone only
    shot = tmp_path / f"report_{width}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    assert problems == []
    page.close()


def test_every_link_resolves_and_chromium_plays_the_mp4s(browser, report_page, tmp_path):
    page, problems = open_page(browser, report_page.as_uri(), 1280)
    links = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))")
    files = [h for h in links if not h.startswith("#")]
    assert files == ["metrics.json", *(f"grids/{t}.mp4" for t in ("fp", "opd", "every2", "cg"))]
    assert all((report_page.parent / f).is_file() for f in files)
    anchors = {h[1:] for h in links if h.startswith("#")}
    assert anchors == {"task-fp", "task-opd", "task-every2", "task-cg"}
    assert page.evaluate("ids => ids.every(i => document.getElementById(i) !== null)", sorted(anchors))
    page.close()
    # the linked mp4s decode in this browser (H.264, yuv420p): each reaches HAVE_CURRENT_DATA at full size
    probe = report_page.parent / "probe.html"
    probe.write_text("<!doctype html><title>mp4</title>" + "".join(
        f'<video src="{f}" muted preload="auto"></video>' for f in files if f.endswith(".mp4")))
    page, problems = open_page(browser, probe.as_uri(), 1280)
    page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)",
                           timeout=15_000)
    states = page.evaluate("[...document.querySelectorAll('video')].map(v => [v.readyState >= 2, v.error && "
                           "v.error.code, v.videoWidth, v.videoHeight])")
    assert states == [[True, None, 300, 402]] * 4
    assert problems == []
    page.close()
