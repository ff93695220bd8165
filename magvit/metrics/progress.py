"""What a long evaluation says while it runs: its plan, a progress bar over clip-tasks, and an estimate of the
time left, extrapolated from the work timed so far (used by :func:`magvit.metrics.evaluation.evaluate_tasks`).

Everything is written to stderr through tqdm, so a result table on stdout stays clean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"14 min"`` or ``"2 h 05 min"``: the precision an estimate has."""
    if seconds < 59.5:
        return f"{max(1, round(seconds))} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{minutes} min" if hours == 0 else f"{hours} h {minutes:02d} min"


@attrs.frozen
class Estimate:
    """How long the rest of an evaluation takes, extrapolated in clips from the work timed so far.

    Every clip costs about the same: one reference pass (the tokenizer's reconstruction and, with FVD, the
    extractor's features of the real clip) and one pass per task (generation with a fixed number of steps,
    the trivial answer, the extractor's features of the generation). So the time per clip measured on the
    first clips, times the clips left, is the estimate.
    """

    remaining_seconds: float | None  # None when the number of clips is not known in advance
    seconds_per_clip: float  # the reference pass and every task, for one clip
    fvd_share: float  # fraction of that time spent in the FVD feature extractor
    num_tasks: int
    num_clips: int | None
    measured_on: str  # what was timed, e.g. "the first batch of 8 clips"

    @classmethod
    def extrapolate(cls, *, batch_seconds: float, batch_fvd_seconds: float, batch_clips: int, spent_seconds: float,
                    num_tasks: int, num_clips: int | None, measured_on: str) -> Estimate:
        """The estimate from one batch's (measured or projected) time: ``num_clips`` at the batch's rate per
        clip, less ``spent_seconds`` already done."""
        per_clip = batch_seconds / batch_clips
        remaining = None if num_clips is None else max(0.0, num_clips * per_clip - spent_seconds)
        share = batch_fvd_seconds / batch_seconds if batch_seconds > 0 else 0.0
        return cls(remaining, per_clip, share, num_tasks, num_clips, measured_on)

    def message(self, hint: str | None = None) -> str:
        """One line, e.g. ``evaluate: about 14 min left for 10 tasks x 256 clips, ...``; ``hint`` is appended
        (the command's quicker options)."""
        tasks = f"{self.num_tasks} task{'' if self.num_tasks == 1 else 's'}"
        if self.remaining_seconds is None:
            head = f"about {format_duration(self.seconds_per_clip)} per clip for {tasks}"
        else:
            head = f"about {format_duration(self.remaining_seconds)} left for {tasks} x {self.num_clips} clips"
        fvd = f", {self.fvd_share:.0%} of it FVD's feature extraction" if self.fvd_share >= 0.005 else ""
        text = f"evaluate: {head}{fvd} (measured on {self.measured_on})"
        return f"{text}; {hint}" if hint else text


#: Clips per task of the quicker look :func:`quick_look_hint` suggests.
QUICK_LOOK_CLIPS = 32


def quick_look_hint(estimate: Estimate, *, clips_flag: str, fvd_flag: str) -> str | None:
    """The quicker options of a command with the whole run's time under each, from ``estimate``: fewer clips
    (``clips_flag`` with :data:`QUICK_LOOK_CLIPS`) when there are more, no FVD (``fvd_flag``) when FVD is on.
    None when neither applies."""
    options = []
    if estimate.num_clips is None or estimate.num_clips > QUICK_LOOK_CLIPS:
        options.append(f"{clips_flag} {QUICK_LOOK_CLIPS} (about "
                       f"{format_duration(QUICK_LOOK_CLIPS * estimate.seconds_per_clip)})")
    if estimate.fvd_share > 0:
        without = estimate.seconds_per_clip * (1 - estimate.fvd_share)
        options.append(f"{fvd_flag} (about {format_duration(without)} per clip)" if estimate.num_clips is None
                       else f"{fvd_flag} (about {format_duration(without * estimate.num_clips)})")
    return f"for a quicker look: {' or '.join(options)}" if options else None


def print_progress_line(text: str) -> None:
    """``text`` on stderr, above a running tqdm bar rather than through it."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


def clip_count(batches: Iterable[Any], max_clips: int | None) -> int | None:
    """The clips an evaluation will see, when known before reading them: a list of batches, or a loader whose
    ``source.num_clips`` is known (a dataset folder's meta.json); at most ``max_clips``."""
    if isinstance(batches, Sequence):
        known: int | None = sum(int(b.video.shape[0]) for b in batches)
    else:
        known = getattr(getattr(batches, "source", None), "num_clips", None)
    if known is None:
        return max_clips
    return known if max_clips is None else min(known, max_clips)


class EvalProgress:
    """The evaluation's tqdm bar on stderr and its lines above it; nothing at all when disabled.

    The bar counts clip-tasks: each clip once for the reference pass and once per task, so it moves after
    every task of every batch, and its total is ``clips x (tasks + 1)``.
    """

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled = enabled
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="evaluate", unit="clip-task", dynamic_ncols=True, file=sys.stderr)

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def line(self, text: str) -> None:
        if self.enabled:
            print_progress_line(text)

    def close(self, finished: bool = True) -> None:
        """End the bar; when ``finished``, at its total (the data may hold fewer clips than expected)."""
        if self.bar is None:
            return
        if finished:
            if self.bar.total is not None and self.bar.n < self.bar.total:
                self.bar.total = self.bar.n
            self.bar.set_postfix_str("done", refresh=False)
        self.bar.close()
        self.bar = None


def plan_line(num_tasks: int, num_clips: int | None, batch_clips: int, extractor: str | None) -> str:
    """What the evaluation will do (``extractor``: the FVD feature extractor's name, None without FVD)."""
    clips = "every clip" if num_clips is None else f"{num_clips} clips"
    features = f"with FVD ({extractor} features of every real and generated clip)" if extractor else "without FVD"
    return (f"evaluate: {num_tasks} task{'' if num_tasks == 1 else 's'} x {clips} in batches of {batch_clips}, "
            f"{features}; the bar counts each clip once per task and once for the reference pass "
            f"(tokenizer{', ' + extractor if extractor else ''}); an estimate follows the first task")


def estimate_printer(*, clips_flag: str, fvd_flag: str) -> Callable[[Estimate], None]:
    """An ``on_estimate`` callback that prints the estimate with a command's quicker options (its flags)."""

    def announce(estimate: Estimate) -> None:
        print_progress_line(estimate.message(quick_look_hint(estimate, clips_flag=clips_flag, fvd_flag=fvd_flag)))

    return announce
