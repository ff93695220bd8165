"""The HTML report of an evaluation: ``index.html`` beside ``metrics.json`` and the per-task grids.

The page explains itself to a reader who has not read the paper: every task with its title and what it is
given (:func:`magvit.protocols.task_title`, :func:`~magvit.protocols.task_description`), the scores table
with a legend for every column (the wording of :data:`magvit.metrics.evaluation.TABLE_LEGEND`, shared
with ``magvit evaluate``), the quality bar's rule, the FVD protocol as a key/value table, and each task's
condition | generation | ground-truth grid with labelled columns and a link to its mp4.

The page is one self-contained file (inline CSS, no script, no request outside ``out_dir``) and is
responsive: the wide table scrolls inside its own box and the grids shrink to the screen, so nothing
overflows sideways on a phone.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from magvit.metrics.evaluation import QUALITY_BAR_MARGIN_DB, TABLE_COLUMNS, TABLE_LEGEND, EvalReport
from magvit.protocols import task_description, task_title

#: The columns of every grid, left to right (``run_demo`` writes them in this order).
GRID_COLUMNS = ("condition", "generation", "ground truth")
#: Where the grids live, relative to ``index.html``; ``<task>.gif`` is shown, ``<task>.mp4`` linked.
GRIDS_DIR = "grids"
METRICS_FILE = "metrics.json"
#: A table cell with no value: the score does not apply (no condition region) or was not computed (FVD).
MISSING = "–"


@attrs.frozen
class TaskCard:
    """What the page shows for one task.

    Attributes:
        name: the registry name, e.g. ``"fp"``.
        title: e.g. ``"frame prediction"`` (the name when the task declares no title).
        description: one line saying what is given and what is generated (may be empty).
        no_condition: for a task without a visual condition, the note printed on its grid's condition
            column (black: there is nothing to show); empty for the others.
        gif: path of the grid image relative to the page, or None when it was not written.
        mp4: path of the grid video relative to the page, or None when it was not written.
        size: the gif's ``(width, height)`` in pixels, or None.
    """

    name: str
    title: str
    description: str
    no_condition: str
    gif: str | None = None
    mp4: str | None = None
    size: tuple[int, int] | None = None


def task_card(name: str, task: Any | None, out_dir: Path | None = None, has_condition: bool = True) -> TaskCard:
    """The card of task ``name``; ``task`` is its object, or None when only the name is known (then
    ``has_condition`` says whether it had a condition region). Grid files are looked up in ``out_dir``."""
    if task is None:
        title, description, note = name, "", "" if has_condition else "no condition"
    else:
        title, description = task_title(task), task_description(task)
        given = "class label only" if getattr(task, "uses_class", False) else "nothing given"
        note = "" if getattr(task, "needs_video", True) else f"no condition: {given}"
    gif = mp4 = size = None
    if out_dir is not None:
        gif_path, mp4_path = out_dir / GRIDS_DIR / f"{name}.gif", out_dir / GRIDS_DIR / f"{name}.mp4"
        if gif_path.exists():
            gif, size = f"{GRIDS_DIR}/{name}.gif", _image_size(gif_path)
        if mp4_path.exists():
            mp4 = f"{GRIDS_DIR}/{name}.mp4"
    return TaskCard(name, title, description, note, gif, mp4, size)


def write_report(
    out_dir: str | Path,
    report: EvalReport,
    bar: Mapping[str, Mapping[str, bool]],
    tasks: Mapping[str, Any] | None = None,
    *,
    heading: str = "MAGVIT evaluation",
    margin_db: float = QUALITY_BAR_MARGIN_DB,
) -> Path:
    """Write ``out_dir/index.html`` for ``report`` and return its path.

    Args:
        out_dir: the folder holding ``metrics.json`` and ``grids/<task>.gif|mp4`` (linked when present).
        report: the scores (:func:`magvit.metrics.evaluation.evaluate_tasks`).
        bar: :func:`magvit.metrics.evaluation.quality_bar` of ``report``, computed with ``margin_db``.
        tasks: the task objects by name (e.g. ``pipeline.tasks``), for their titles and descriptions.
        heading: the page's title.
    """
    out_dir = Path(out_dir)
    tasks = tasks or {}
    cards = [task_card(name, tasks.get(name), out_dir, has_condition=s.psnr_condition is not None)
             for name, s in report.tasks.items()]
    metrics = METRICS_FILE if (out_dir / METRICS_FILE).exists() else None
    page = render_report(report, bar, cards, heading=heading, margin_db=margin_db, metrics=metrics)
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def render_report(
    report: EvalReport,
    bar: Mapping[str, Mapping[str, bool]],
    cards: list[TaskCard],
    *,
    heading: str = "MAGVIT evaluation",
    margin_db: float = QUALITY_BAR_MARGIN_DB,
    metrics: str | None = METRICS_FILE,
) -> str:
    """The page as a string (see :func:`write_report`); ``metrics``: the link to the scores file, or None."""
    clips = max((s.num_clips for s in report.tasks.values()), default=0)
    pasted = ("pasted back before scoring" if report.paste_condition
              else "scored as generated, not pasted back (as in the paper)")
    files = f' The scores as JSON: <a href="{html.escape(metrics)}">{html.escape(metrics)}</a>.' if metrics else ""
    intro = (f"<p>{len(report.tasks)} tasks, each scored on {clips} held-out clips. Tokenizer reconstruction "
             f"PSNR over whole clips (encode, then decode): {format_score(report.tokenizer_psnr)} dB. "
             f"Condition pixels are {pasted}.{files}</p>")
    return _PAGE.format(
        title=html.escape(heading), css=_CSS, intro=intro, table=scores_table(report, bar, margin_db),
        legend=legend(margin_db), fvd=fvd_protocol(report.fvd), cards="\n".join(map(card_html, cards)),
        columns=" | ".join(GRID_COLUMNS),
    )


def scores_table(report: EvalReport, bar: Mapping[str, Mapping[str, bool]], margin_db: float) -> str:
    """The scores table: one row per task and the average, columns as in ``metrics.json``."""
    # <wbr> after each underscore lets a long column name wrap, so the table fits a laptop screen
    head = "".join(f'<th scope="col"><code>{c.replace("_", "_<wbr>")}</code></th>' for c in TABLE_COLUMNS)
    rows = []
    for name, s in report.tasks.items():
        values = "".join(f"<td>{format_score(getattr(s, c))}</td>" for c in TABLE_COLUMNS)
        verdict, css, why = bar_verdict(bar.get(name), margin_db)
        why = f' <span class="why">{html.escape(why)}</span>' if why else ""
        rows.append(f'<tr><th scope="row"><a href="#task-{html.escape(name)}">{html.escape(name)}</a></th>'
                    f'{values}<td>{s.num_clips}</td><td class="{css}">{verdict}{why}</td></tr>')
    avg = report.average()
    values = "".join(f"<td>{format_score(avg.get(c))}</td>" for c in TABLE_COLUMNS)
    rows.append(f'<tr class="average"><th scope="row">average</th>{values}<td></td><td></td></tr>')
    return ('<div class="scroll" role="region" aria-label="scores table" tabindex="0"><table>'
            f'<thead><tr><th scope="col">task</th>{head}<th scope="col">clips</th>'
            f'<th scope="col">quality bar</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="hint">The table scrolls sideways.</p>'
            f'<p class="units"><code>psnr*</code> in dB, higher is better; <code>ssim</code> in [0, 1], higher '
            f"is better; <code>fvd</code> lower is better; {MISSING}: does not apply or was not computed</p>")


def bar_verdict(checks: Mapping[str, bool] | None, margin_db: float) -> tuple[str, str, str]:
    """The quality-bar cell: verdict (``pass``, ``fail``, ``n/a`` when there is no condition), its CSS class,
    and the failed rules (empty unless it fails)."""
    if checks is None:
        return "n/a", "na", ""
    if all(checks.values()):
        return "pass", "pass", ""
    rules = {"beats_trivial": "psnr_generated ≤ psnr_trivial",
             "condition_within_margin": f"psnr_condition < psnr_tokenizer_condition − {margin_db:g} dB"}
    return "fail", "fail", "; ".join(rules.get(k, k) for k, ok in checks.items() if not ok)


def legend(margin_db: float) -> str:
    """A definition list with one entry per column of :func:`scores_table`."""
    entries = [("task", "the task's short name; its title, what it is given and its grid are under "
                        "<em>Tasks</em> below")]
    entries += [(f"<code>{c}</code>", html.escape(TABLE_LEGEND[c])) for c in TABLE_COLUMNS]
    entries += [
        ("clips", "how many held-out clips were scored for the task"),
        ("quality bar", "pass when both hold: the generation beats the trivial answer in the generated region "
                        "(<code>psnr_generated</code> &gt; <code>psnr_trivial</code>: the model does better than "
                        "copying its input), and it keeps the given pixels about as well as the tokenizer can "
                        f"(<code>psnr_condition</code> at most {margin_db:g} dB below "
                        "<code>psnr_tokenizer_condition</code>); n/a for tasks without a visual condition, "
                        "where there is nothing to compare with"),
    ]
    return '<dl class="legend">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in entries) + "</dl>"


def fvd_protocol(protocol: Mapping[str, Any] | None) -> str:
    """How FVD was computed, as a key/value table (nested keys joined with dots), or why there is none."""
    if protocol is None:
        return ("<p>FVD not computed: the run had no I3D feature extractor (<code>--no_fvd</code>, or the "
                "Kinetics-400 I3D weights are missing; <code>magvit weights i3d</code> gets them).</p>")
    rows = "".join(f'<tr><th scope="row"><code>{html.escape(k)}</code></th><td>{html.escape(v)}</td></tr>'
                   for k, v in _flatten(protocol))
    return f'<div class="scroll"><table class="protocol"><tbody>{rows}</tbody></table></div>'


def card_html(card: TaskCard) -> str:
    """One task: name, title, description, the labelled grid and the link to its mp4."""
    name = html.escape(card.name)
    spans = "".join(f"<span>{html.escape(x)}</span>" for x in GRID_COLUMNS)
    if card.gif is not None:
        dims = f' width="{card.size[0]}" height="{card.size[1]}"' if card.size else ""
        columns = [f"condition ({card.no_condition}, black)" if card.no_condition else GRID_COLUMNS[0],
                   *GRID_COLUMNS[1:]]
        alt = f"{card.name} ({card.title}): held-out clips, one per row; columns: {', '.join(columns)}"
        # the note sits on the black condition column, so that an empty condition does not look like a bug
        note = f'<span class="blank"><span>{html.escape(card.no_condition)}</span></span>' if card.no_condition else ""
        grid = (f'<div class="grid"><div class="labels" aria-hidden="true">{spans}</div>'
                f'<div class="frame"><img src="{html.escape(card.gif)}"{dims} alt="{html.escape(alt)}">{note}</div>'
                "</div>")
    else:
        grid = '<p class="note">no grid was written for this task</p>'
    link = (f'<p><a href="{html.escape(card.mp4)}" type="video/mp4">{name}.mp4</a> (the same grid as H.264 '
            "video, full colour)</p>" if card.mp4 else "")
    title = f" {html.escape(card.title)}" if card.title != card.name else ""
    description = f"<p>{html.escape(card.description)}</p>" if card.description else ""
    return (f'<article class="card" id="task-{name}"><h3><code>{name}</code>{title}</h3>{description}'
            f"{grid}{link}</article>")


def format_score(value: Any) -> str:
    """A table cell: two decimals for floats, :data:`MISSING` for None."""
    if value is None:
        return MISSING
    return f"{value:.2f}" if isinstance(value, float) else html.escape(str(value))


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            text = value if isinstance(value, str) else "none" if value is None else json.dumps(value)
            out.append((f"{prefix}{key}", text))
    return out


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except OSError:  # an unreadable file: the page still links it, without declared dimensions
        return None


_CSS = """
*,*::before,*::after{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1f;background:#fff}
main{max-width:1200px;margin:0 auto;padding:12px 16px 32px}
h1{font-size:1.6rem;margin:.4em 0}
h2{font-size:1.25rem;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1em 0 .3em}
.card h3{margin-top:0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
a{color:#0b57d0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.units,.hint{font-size:.85rem;color:#555;margin:4px 0 0}
.hint{display:none}
th,td{padding:4px 10px;text-align:right;border-bottom:1px solid #e4e4e7;white-space:nowrap}
th:first-child{text-align:left}
thead th{vertical-align:bottom;background:#f6f6f8;white-space:normal;min-width:4.5em}
#scores table th:first-child{position:sticky;left:0;background:#fff;box-shadow:inset -1px 0 0 #ddd}
#scores table thead th:first-child{background:#f6f6f8}
#scores table td:last-child,#scores table th:last-child{text-align:left}
.why{display:block;font-size:.8em;white-space:normal;min-width:14em}
tr.average{font-weight:600}
tr.average th,tr.average td{border-top:2px solid #999}
td.pass{color:#0a6b2c}
td.fail{color:#b3261e}
td.na{color:#666}
table.protocol td{text-align:left;white-space:normal;overflow-wrap:anywhere}
dl.legend{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;font-size:.95rem}
dl.legend dt{font-weight:600}
dl.legend dd{margin:0}
@media (max-width:640px){
  .hint{display:block}
  dl.legend{grid-template-columns:1fr}
  dl.legend dd{margin:0 0 8px 12px}
  table.protocol,table.protocol tbody,table.protocol tr,table.protocol th,table.protocol td{display:block}
  table.protocol th{border:0;padding-bottom:0}
  table.protocol td{padding-left:22px}
}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:16px}
.card{border:1px solid #ddd;border-radius:8px;padding:12px;min-width:0}
.card p{margin:.2em 0 .6em}
.grid{display:inline-block;max-width:100%;vertical-align:top}
.labels{display:grid;grid-template-columns:repeat(3,1fr);width:0;min-width:100%;font-size:.8rem;line-height:1.2;
  text-align:center;color:#333;margin-bottom:2px}
.labels span{padding:0 2px;align-self:end}
.frame{position:relative}
.blank{position:absolute;top:0;bottom:0;left:0;width:32%;display:flex;align-items:center;justify-content:center}
.blank span{background:#000;color:#eee;border:1px solid #777;border-radius:4px;padding:4px;margin:2px;
  font-size:.75rem;font-style:italic;line-height:1.2;text-align:center}
img{display:block;max-width:100%;height:auto;image-rendering:pixelated;background:#000}
.note{color:#666;font-style:italic}
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<main>
<h1>{title}</h1>
{intro}
<section id="scores">
<h2>Scores</h2>
{table}
<h3>Columns</h3>
{legend}
</section>
<section id="fvd">
<h2>FVD protocol</h2>
{fvd}
</section>
<section id="tasks">
<h2>Tasks</h2>
<p>Each grid shows held-out clips, one per row, in three columns: {columns}. The condition column is what
the model is given: the kept pixels, with the rest padded as the task pads it (black, or edges repeated).</p>
<div class="cards">
{cards}
</div>
</section>
</main>
</body>
</html>
"""
