"""The committed study results (docs/ablations/<study>/) are what the runner wrote, and docs/ablations.md
quotes them: every committed report is the rendering of its committed results.json, and every table row of a
study's section in docs/ablations.md is a row of that study's committed report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from magvit.ablation.report import render_report
from magvit.ablation.study import load_study
from magvit.configs import config_dir

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "ablations"
STUDIES = sorted(p.name for p in COMMITTED.iterdir() if (p / "results.json").is_file())
SECTION = re.compile(r"^### Table (\d+)\b")


def _sections(text: str) -> dict[str, list[str]]:
    """The table rows (``|`` lines) under each ``### Table N`` heading of the Results section, by study name."""
    rows: dict[str, list[str]] = {}
    current = None
    in_results = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_results = line.strip() == "## Results"
            current = None
        elif in_results and (m := SECTION.match(line)):
            current = f"table{m.group(1)}"
            rows.setdefault(current, [])
        elif current is not None and line.startswith("|"):
            rows[current].append(line)
    return rows


@pytest.mark.parametrize("study", STUDIES)
def test_a_committed_report_renders_its_committed_results(study):
    folder = COMMITTED / study
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert results["study"] == study and results["smoke"] is False
    plots = sorted(p.name for p in folder.glob("*.png"))
    spec = load_study(config_dir() / "ablations" / f"{study}.yaml")
    # the plot order of the report is the plotting order (primary first)
    plots = sorted(plots, key=lambda name: (name != "primary.png", name))
    assert (folder / "report.md").read_text(encoding="utf-8") == render_report(spec, results, plots)


def test_every_table_row_of_a_study_section_is_in_its_committed_report():
    sections = _sections((ROOT / "docs" / "ablations.md").read_text(encoding="utf-8"))
    for study, rows in sections.items():
        report = (COMMITTED / study / "report.md").read_text(encoding="utf-8").splitlines()
        missing = [row for row in rows if row not in report]
        assert not missing, (study, missing)


def test_the_check_finds_a_row_that_is_not_in_the_report():
    text = "## Results\n\n| status |\n\n### Table 5: x\n\n| commit | 1.0 |\n\n## Next\n\n| other |\n"
    assert _sections(text) == {"table5": ["| commit | 1.0 |"]}
