"""The report page's content: tasks explained, columns labelled, every table column in the legend."""

from __future__ import annotations

from pathlib import Path

import pytest

from magvit.metrics.evaluation import TABLE_COLUMNS, TABLE_LEGEND, EvalReport
from magvit.report import fvd_protocol, render_report, task_card
from tests.helpers.report import SCORES, parse_page, write_sample_report
from tests.helpers.tasks import EverySecondPixel


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    path = write_sample_report(tmp_path_factory.mktemp("report"))
    return parse_page(path.read_text(encoding="utf-8"))


def test_the_page_declares_language_viewport_and_title(page):
    assert page.find("html").attrs == {"lang": "en"}
    assert page.find("meta", name="viewport").attrs["content"] == "width=device-width, initial-scale=1"
    assert page.find("title").text() == page.find("h1").text() == "MAGVIT demo: one tiny model, ten tasks"
    assert page.find("link", rel="icon").attrs["href"] == "data:,"  # no favicon request


def test_each_task_shows_its_title_description_and_labelled_grid(page):
    cards = page.find_all("article", cls="card")
    assert [c.attrs["id"] for c in cards] == ["task-fp", "task-opd", "task-every2", "task-cg"]
    heads = [(c.find("h3").text(), c.find_all("p")[0].text()) for c in cards]
    assert heads == [
        ("fp frame prediction", "the first frame is given, the rest is generated"),
        ("opd dynamic outpainting", "a half-width vertical band sliding left to right is given, the rest is generated"),
        # a plugin task without title or description: its name and its docstring's first line
        ("every2", "Keeps every 2nd pixel of every frame: under any supervoxel wider than one pixel, every token."),
        ("cg class-conditional generation", "only the class label is given, the whole clip is generated"),
    ]
    for card in cards:
        name = card.attrs["id"].removeprefix("task-")
        assert [s.text() for s in card.find("div", cls="labels").find_all("span")] == [
            "condition", "generation", "ground truth"]
        image = card.find("img")
        assert image.attrs["src"] == f"grids/{name}.gif"
        assert (image.attrs["width"], image.attrs["height"]) == ("300", "402")
        assert image.attrs["alt"].startswith(f"{name} (")
        assert card.find("a").attrs["href"] == f"grids/{name}.mp4"
    # cg's black condition column says why it is black; the others carry no such note
    blank = [c.find_all("span", cls="blank") for c in cards]
    assert [len(b) for b in blank] == [0, 0, 0, 1]
    assert blank[3][0].text() == "no condition: class label only"
    assert cards[3].find("img").attrs["alt"] == ("cg (class-conditional generation): held-out clips, one per row; "
                                                 "columns: condition (no condition: class label only, black), "
                                                 "generation, ground truth")


def test_the_scores_table_has_every_column_and_the_bar_verdict(page):
    table = page.find("section", id="scores").find("table")
    assert [th.text() for th in table.find("thead").find_all("th")] == ["task", *TABLE_COLUMNS, "clips", "quality bar"]
    rows = [[cell.text() for cell in tr.children if not isinstance(cell, str)]
            for tr in table.find("tbody").find_all("tr")]
    assert rows == [
        ["fp", "22.50", "20.25", "29.75", "30.00", "29.50", "23.00", "0.81", "–", "4", "pass"],
        ["opd", "18.00", "19.50", "28.00", "28.50", "27.00", "21.00", "0.75", "–", "4",
         "fail psnr_generated ≤ psnr_trivial"],
        ["every2", "26.00", "24.00", "25.00", "27.00", "26.00", "25.50", "0.88", "–", "4",
         "fail psnr_condition < psnr_tokenizer_condition − 1 dB"],
        ["cg", "15.00", "9.00", "–", "–", "–", "15.00", "0.50", "–", "4", "n/a"],
        ["average", "20.38", "18.19", "–", "–", "–", "21.12", "0.73", "–", "", ""],
    ]
    assert [a.attrs["href"] for a in table.find_all("a")] == ["#task-fp", "#task-opd", "#task-every2", "#task-cg"]
    # the wide table sits in its own scrolling box, so the page itself never scrolls sideways
    assert page.find("div", cls="scroll", role="region").find_all("table") == [table]


def test_the_legend_explains_every_column_in_the_evaluation_wording(page):
    legend = page.find("dl", cls="legend")
    terms = [dt.text() for dt in legend.find_all("dt")]
    assert terms == ["task", *TABLE_COLUMNS, "clips", "quality bar"]
    meanings = dict(zip(terms, (dd.text() for dd in legend.find_all("dd"))))
    assert all(meanings[c] == TABLE_LEGEND[c] for c in TABLE_COLUMNS)
    assert meanings["quality bar"] == (
        "pass when both hold: the generation beats the trivial answer in the generated region (psnr_generated > "
        "psnr_trivial: the model does better than copying its input), and it keeps the given pixels about as well "
        "as the tokenizer can (psnr_condition at most 1 dB below psnr_tokenizer_condition); n/a for tasks without "
        "a visual condition, where there is nothing to compare with")


def test_the_fvd_protocol_is_a_key_value_table(page):
    rows = [(tr.find("th").text(), tr.find("td").text())
            for tr in page.find("section", id="fvd").find("table", cls="protocol").find_all("tr")]
    assert rows == [
        ("weights_sha256", "0123456789abcdef" * 4), ("extractor", "InceptionI3d"),
        ("preprocessing.size", "[224, 224]"), ("preprocessing.resize", "tf1_bilinear"),
        ("preprocessing.intermediate_size", "none"), ("preprocessing.value_range", "[-1.0, 1.0]"),
        ("num_real", "4"), ("num_fake_per_task", "4"),
    ]
    assert fvd_protocol(None) == (
        "<p>FVD not computed: the run had no I3D feature extractor (<code>--no_fvd</code>, or the Kinetics-400 I3D "
        "weights are missing; <code>magvit weights i3d</code> gets them).</p>")


def test_the_page_links_metrics_json_and_the_intro_states_the_setting(page):
    intro = page.find("main").find_all("p")[0]
    assert intro.text() == (
        "4 tasks, each scored on 4 held-out clips. Tokenizer reconstruction PSNR over whole clips (encode, then "
        "decode): 31.25 dB. Condition pixels are scored as generated, not pasted back (as in the paper). The "
        "scores as JSON: metrics.json.")
    assert intro.find("a").attrs["href"] == "metrics.json"


def test_missing_grids_and_unknown_tasks_still_give_a_page(tmp_path: Path):
    """A task object is optional (only its name is known) and so are the grid files."""
    report = EvalReport(tokenizer_psnr=30.0, tasks={"cg": SCORES["cg"], "every2": SCORES["every2"]},
                        paste_condition=True, fvd=None)
    cards = [task_card("cg", None, tmp_path, has_condition=False), task_card("every2", EverySecondPixel(), tmp_path)]
    assert [(c.title, c.no_condition, c.gif, c.mp4) for c in cards] == [("cg", "no condition", None, None),
                                                                         ("every2", "", None, None)]
    page = parse_page(render_report(report, {}, cards, metrics=None))
    assert [p.text() for p in page.find_all("p", cls="note")] == ["no grid was written for this task"] * 2
    assert page.find_all("img") == [] and page.find_all("a", href="metrics.json") == []
    assert "pasted back before scoring" in page.find("main").find_all("p")[0].text()
