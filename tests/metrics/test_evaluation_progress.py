"""What evaluate_tasks says while it runs: the plan, the estimate after the first task and the first batch, and
a bar over clip-tasks that reaches its total; nothing when progress is off.

A fake pipeline advances a fake clock by fixed costs (generation 10 s, tokenizer encode 1 s, feature extractor
3 s per call), so the estimates are exact.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from magvit import registry
from magvit.batch import ClipBatch
from magvit.registry import get_sampler
from magvit.metrics import evaluation
from magvit.metrics import progress
from magvit.metrics.evaluation import evaluate_tasks
from magvit.metrics.progress import Estimate, format_duration, quick_look_hint

GENERATE_S, ENCODE_S, FEATURES_S = 10.0, 1.0, 3.0
SHAPE = (2, 3, 4, 8, 8)  # batches of 2 clips, 4 frames of 8x8


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class FakeTokenizer:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def encode(self, video):
        self.clock.now += ENCODE_S
        return video

    def decode(self, tokens):
        return tokens


class FakePipeline:
    """The surface evaluate_tasks uses: tasks, task(), device, tokenizer, decoding_sampler() and generate()."""

    def __init__(self, clock: Clock, names: list[str]) -> None:
        self.clock = clock
        self.tasks = {n: registry.get_task(n) for n in names}
        self.tokenizer = FakeTokenizer(clock)
        self.device = torch.device("cpu")

    def task(self, name):
        return self.tasks[name]

    def decoding_sampler(self, sampler=None, **options):
        return get_sampler(sampler or "commit", **options)

    def generate(self, task, video, label, *, steps, generator, paste_condition, sampler, guidance_scale,
                 guidance_task, precision):
        self.clock.now += GENERATE_S
        return torch.full(SHAPE, 0.5)


class TimedFeatures(nn.Module):
    """Per-channel means and stds (6 features); each call costs FEATURES_S on the fake clock."""

    num_features = 6

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def forward(self, video):
        self.clock.now += FEATURES_S
        return torch.cat([video.mean(dim=(2, 3, 4)), video.std(dim=(2, 3, 4))], dim=1)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(evaluation, "time", types.SimpleNamespace(perf_counter=c.perf_counter))
    return c


def batches(n: int, events: list | None = None):
    g = torch.Generator().manual_seed(0)
    out = [ClipBatch(video=torch.rand(SHAPE, generator=g), label=torch.tensor([0, 1]), keys=["a", "b"])
           for _ in range(n)]
    if events is None:
        return out

    def reading():  # an iterable without a length: the clip count comes from max_clips
        for i, batch in enumerate(out):
            events.append(f"batch {i + 1}")
            yield batch

    return reading()


def test_estimates_come_after_the_first_task_and_the_first_batch_before_the_second(clock):
    events: list = []
    pipe = FakePipeline(clock, ["fp", "cg"])
    evaluate_tasks(pipe, batches(3, events), fvd_extractor=TimedFeatures(clock), max_clips=6,
                   on_batch=lambda *a: events.append("grid"), on_estimate=events.append)
    assert [e if isinstance(e, str) else "estimate" for e in events] == [
        "batch 1", "grid", "estimate", "grid", "estimate", "batch 2", "batch 3"]
    first_task, first_batch = (e for e in events if isinstance(e, Estimate))
    # reference pass 1 + 3 s (3 of them FVD), fp 10 + 1 + 3 s, cg 10 + 3 s; batches of 2 of 6 clips
    assert first_task == Estimate(remaining_seconds=6 * (4 + 2 * 14) / 2 - 18, seconds_per_clip=16.0,
                                  fvd_share=9 / 32, num_tasks=2, num_clips=6,
                                  measured_on="the first task of the first batch of 2 clips, start-up included; "
                                              "refined after the first batch")
    assert first_batch == Estimate(remaining_seconds=4 * 31 / 2, seconds_per_clip=15.5, fvd_share=9 / 31,
                                   num_tasks=2, num_clips=6, measured_on="the first batch of 2 clips")


def test_no_estimate_when_the_first_batch_is_all_the_work(clock):
    seen: list = []
    evaluate_tasks(FakePipeline(clock, ["fp", "cg"]), batches(1), fvd_extractor=None, on_estimate=seen.append)
    assert [e.measured_on for e in seen] == ["the first task of the first batch of 2 clips, start-up included"]
    assert seen[0].fvd_share == 0 and seen[0].remaining_seconds == 2 * (1 + 2 * 11) / 2 - 12


def test_progress_prints_plan_estimate_and_a_bar_to_its_total_on_stderr(clock, capsys):
    evaluate_tasks(FakePipeline(clock, ["fp", "opc", "cg"]), batches(3), fvd_extractor=TimedFeatures(clock),
                   progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.replace("\r", "\n").splitlines()
    plan = lines.index("evaluate: 3 tasks x 6 clips in batches of 2, with FVD (TimedFeatures features of every "
                       "real and generated clip); the bar counts each clip once per task and once for the reference "
                       "pass (tokenizer, TimedFeatures); an estimate follows the first task")
    # fake-clock costs: the real clips' pass 4 s, fp 14 s, so a batch of 2 clips projected at 4 + 3 * 14 = 46 s (12 of FVD), 18 s spent
    first = lines.index("evaluate: about 2 min left for 3 tasks x 6 clips, 26% of it FVD's feature extraction "
                        "(measured on the first task of the first batch of 2 clips, start-up included; refined "
                        "after the first batch)")
    # fake-clock costs: 4 + 14 + 14 (opc) + 13 (cg) = 45 s per batch (12 of FVD), 90 s left
    second = lines.index("evaluate: about 2 min left for 3 tasks x 6 clips, 27% of it FVD's feature extraction "
                         "(measured on the first batch of 2 clips)")
    assert plan < first < second
    assert any("24/24" in line and "done" in line for line in lines)  # 6 clips x (3 tasks + reference)
    assert not any("25/24" in line for line in lines)
    assert lines[-1] == "evaluate: 3 tasks x 6 clips done in 2 min"  # 3 x 45 s


def test_the_bar_total_shrinks_to_what_the_data_held(clock, capsys):
    evaluate_tasks(FakePipeline(clock, ["fp"]), batches(1, []), fvd_extractor=None, max_clips=8, progress=True)
    err = capsys.readouterr().err
    assert "evaluate: 1 task x 8 clips in batches of 2, without FVD" in err and "4/4" in err and "/16" in err


def test_nothing_is_printed_without_progress(clock, capfd):
    evaluate_tasks(FakePipeline(clock, ["fp", "cg"]), batches(2), fvd_extractor=TimedFeatures(clock))
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(("seconds", "text"), [(0.2, "1 s"), (40.4, "40 s"), (59.4, "59 s"), (59.6, "1 min"),
                                               (14 * 60 + 29, "14 min"), (3599, "1 h 00 min"),
                                               (2 * 3600 + 5 * 60, "2 h 05 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_quick_look_hint_times_each_quicker_option():
    est = Estimate(remaining_seconds=1000.0, seconds_per_clip=30.0, fvd_share=0.75, num_tasks=10, num_clips=256,
                   measured_on="the first batch of 8 clips")
    hint = quick_look_hint(est, clips_flag="--num_clips", fvd_flag="--no_fvd")
    # 32 x 30 s = 16 min; 256 x 30 s x (1 - 0.75) = 32 min
    assert hint == "for a quicker look: --num_clips 32 (about 16 min) or --no_fvd (about 32 min)"
    assert est.message(hint) == ("evaluate: about 17 min left for 10 tasks x 256 clips, 75% of it FVD's feature "
                                 "extraction (measured on the first batch of 8 clips); " + hint)
    small = Estimate(remaining_seconds=10.0, seconds_per_clip=5.0, fvd_share=0.0, num_tasks=1, num_clips=4,
                     measured_on="the first batch of 2 clips")
    assert quick_look_hint(small, clips_flag="--num_clips", fvd_flag="--no_fvd") is None
    unknown = Estimate(remaining_seconds=None, seconds_per_clip=5.0, fvd_share=0.5, num_tasks=2, num_clips=None,
                       measured_on="the first batch of 2 clips")
    assert unknown.message() == ("evaluate: about 5 s per clip for 2 tasks, 50% of it FVD's feature extraction "
                                 "(measured on the first batch of 2 clips)")
    assert quick_look_hint(unknown, clips_flag="-n", fvd_flag="--no_fvd") == (
        "for a quicker look: -n 32 (about 3 min) or --no_fvd (about 2 s per clip)")


def test_magvit_evaluate_prints_the_estimate_with_its_quicker_options_on_stderr(clock, tmp_path, capsys,
                                                                               monkeypatch):
    from magvit.cli import main
    from magvit.data import write_synthetic
    from magvit.pipeline import MagvitPipeline

    write_synthetic(tmp_path / "data", num_clips=2, num_val_clips=4, frames=SHAPE[2], size=SHAPE[3])
    monkeypatch.setattr(MagvitPipeline, "from_checkpoint",
                        lambda path, use_ema=True: FakePipeline(clock, ["fp", "cg"]))
    monkeypatch.setattr(progress, "QUICK_LOOK_CLIPS", 2)  # the data's 4 clips are then more than a quick look's
    assert main(["evaluate", "--checkpoint", str(tmp_path / "p.pt"), "--data", str(tmp_path / "data" / "val"),
                 "--batch_size", "2", "--no_fvd"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("task ") and "evaluate:" not in out
    lines = err.replace("\r", "\n").splitlines()
    assert "evaluate: 2 tasks x 4 clips in batches of 2, without FVD; " in err  # the data hold 4 of the 256
    # fake-clock costs: the real clips' pass 1 s, fp 10 + 1 s, cg 10 s; FVD is off, so fewer clips is the only quicker option
    assert [line for line in lines if line.startswith("evaluate: about ")] == [
        "evaluate: about 34 s left for 2 tasks x 4 clips (measured on the first task of the first batch of 2 clips, "
        "start-up included; refined after the first batch); for a quicker look: --num_clips 2 (about 23 s)",
        "evaluate: about 22 s left for 2 tasks x 4 clips (measured on the first batch of 2 clips)"
        "; for a quicker look: --num_clips 2 (about 22 s)",
    ]
    assert any("12/12" in line for line in lines)


def test_an_error_ends_the_bar_where_it_stopped(clock, capsys):
    class Failing(FakePipeline):
        def generate(self, task, video, label, **kw):
            raise RuntimeError("generation failed")

    with pytest.raises(RuntimeError, match="generation failed"):
        evaluate_tasks(Failing(clock, ["fp"]), batches(2), fvd_extractor=None, progress=True)
    err = capsys.readouterr().err
    assert "2/8" in err and "done" not in err
