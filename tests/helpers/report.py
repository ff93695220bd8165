"""A small real evaluation report: exact scores, real gif and mp4 grids of synthetic clips, real tasks.

The scores are fixed numbers (so the page's text is exact) chosen to show every verdict of the quality bar:
fp passes, opd does not beat the trivial answer, every2 (a plugin-style task with no title or
description) loses its condition region, cg has no condition (n/a). The grids are the real condition
videos of those tasks on held-out synthetic clips; the "generation" column is the clip mirrored
left-right, an image that differs visibly from the ground truth.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import attrs
import torch

from magvit.data import frames_to_video, synthetic_clips
from magvit.metrics.evaluation import EvalReport, TaskScores, quality_bar
from magvit.report import GRIDS_DIR, write_report
from magvit.tasks import build_tasks
from magvit.visualize import save_video_grid
from tests.helpers.tasks import EverySecondPixel

SCORES = {
    "fp": TaskScores(psnr_generated=22.5, psnr_trivial=20.25, psnr_condition=29.75, psnr_tokenizer_condition=30.0,
                     psnr=23.0, ssim=0.8125, fvd=None, num_clips=4, psnr_trivial_condition=29.5),
    "opd": TaskScores(psnr_generated=18.0, psnr_trivial=19.5, psnr_condition=28.0, psnr_tokenizer_condition=28.5,
                      psnr=21.0, ssim=0.75, fvd=None, num_clips=4, psnr_trivial_condition=27.0),
    "every2": TaskScores(psnr_generated=26.0, psnr_trivial=24.0, psnr_condition=25.0, psnr_tokenizer_condition=27.0,
                         psnr=25.5, ssim=0.875, fvd=None, num_clips=4, psnr_trivial_condition=26.0),
    "cg": TaskScores(psnr_generated=15.0, psnr_trivial=9.0, psnr_condition=None, psnr_tokenizer_condition=None,
                     psnr=15.0, ssim=0.5, fvd=None, num_clips=4),
}
#: What :func:`magvit.metrics.evaluation.evaluate_tasks` records about FVD, with a made-up weights hash.
FVD_PROTOCOL = {"weights_sha256": "0123456789abcdef" * 4, "extractor": "InceptionI3d",
                "preprocessing": {"size": [224, 224], "resize": "tf1_bilinear", "intermediate_size": None,
                                  "value_range": [-1.0, 1.0]},
                "num_real": 4, "num_fake_per_task": 4}


def sample_tasks() -> dict[str, Any]:
    return {t.name: t for t in [*build_tasks(["fp", "opd", "cg"]), EverySecondPixel()]}


def write_grids(out_dir: Path, tasks: dict[str, Any]) -> None:
    """``grids/<task>.gif`` and ``.mp4`` as ``run_demo`` writes them (4 clips, 3x pixels, 6 fps)."""
    clips, _ = synthetic_clips(4, split="val")
    video = frames_to_video(torch.from_numpy(clips))
    for name, task in tasks.items():
        cond = task.condition(video).video
        for ext in ("gif", "mp4"):
            save_video_grid([cond, video.flip(-1), video], out_dir / GRIDS_DIR / f"{name}.{ext}", fps=6, scale=3)


def write_sample_report(out_dir: Path, fvd: dict[str, Any] | None = FVD_PROTOCOL) -> Path:
    """``out_dir/index.html`` with ``metrics.json`` and the grids beside it; returns the page's path."""
    tasks = sample_tasks()
    write_grids(out_dir, tasks)
    report = EvalReport(tokenizer_psnr=31.25, tasks=SCORES, paste_condition=False, fvd=fvd)
    report.write(out_dir)
    return write_report(out_dir, report, quality_bar(report), tasks, heading="MAGVIT demo: one tiny model, ten tasks")


# -- reading the page back ----------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@attrs.define
class Element:
    """A node of the parsed page: enough of a DOM to check structure and text."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = attrs.field(factory=list)

    def text(self) -> str:
        """The text content, whitespace collapsed."""
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join("".join(parts).split())

    def find_all(self, tag: str | None = None, **want: str) -> list[Element]:
        """Descendants with this tag and these attribute values (``cls`` for ``class``, space-separated)."""
        out = []
        for child in self.children:
            if isinstance(child, str):
                continue
            classes = child.attrs.get("class", "").split()
            if (tag is None or child.tag == tag) and all(
                    (v in classes) if k == "cls" else child.attrs.get(k) == v for k, v in want.items()):
                out.append(child)
            out += child.find_all(tag, **want)
        return out

    def find(self, tag: str | None = None, **want: str) -> Element:
        found = self.find_all(tag, **want)
        assert len(found) == 1, f"expected one <{tag} {want}>, found {len(found)}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attributes})
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_page(text: str) -> Element:
    """The page as a tree; fails on a misnested or unclosed element."""
    builder = _Builder()
    builder.feed(text)
    builder.close()
    assert builder.stack == [builder.root], f"unclosed: {[e.tag for e in builder.stack[1:]]}"
    return builder.root
