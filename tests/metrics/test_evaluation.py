"""Per-task evaluation and the demo's quality bar."""

import math

import pytest
import torch
from torch import nn

from magvit.batch import ClipBatch
from magvit.metrics.evaluation import EvalReport, TaskScores, evaluate_tasks, quality_bar
from magvit.pipeline import MagvitPipeline


def scores(gen, base, cond, tok_cond=30.0):
    return TaskScores(psnr_generated=gen, psnr_trivial=base, psnr_condition=cond, psnr_tokenizer_condition=tok_cond,
                      psnr=20.0, ssim=0.5, fvd=None, num_clips=4)


def test_quality_bar_compares_generated_region_and_condition_margin():
    report = EvalReport(
        tokenizer_psnr=30.0,
        tasks={
            "fp": scores(22.0, 20.0, 29.5),  # beats the trivial answer, condition within 1 dB
            "opc": scores(19.0, 20.0, 29.5),  # worse than the trivial answer
            "ipc": scores(25.0, 20.0, 28.9),  # condition more than 1 dB below the tokenizer in that region
            "opv": scores(25.0, 20.0, 14.5, tok_cond=15.0),  # region is hard for the tokenizer too: passes
            "cg": scores(10.0, 5.0, None, None),  # no visual condition: the bar does not apply
        },
        paste_condition=False,
        fvd=None,
    )
    bar = quality_bar(report)
    assert bar == {
        "fp": {"beats_trivial": True, "condition_within_margin": True},
        "opc": {"beats_trivial": False, "condition_within_margin": True},
        "ipc": {"beats_trivial": True, "condition_within_margin": False},
        "opv": {"beats_trivial": True, "condition_within_margin": True},
    }
    assert report.average()["psnr_generated"] == pytest.approx((22 + 19 + 25 + 25 + 10) / 5)
    assert "average" in report.table() and report.to_csv().splitlines()[0].startswith("task,psnr_generated")


class MeanColour(nn.Module):
    """A tiny deterministic feature extractor: per-channel means and stds (6 features)."""

    num_features = 6

    def forward(self, video):
        return torch.cat([video.mean(dim=(2, 3, 4)), video.std(dim=(2, 3, 4))], dim=1)


def test_evaluate_tasks_scores_every_task():
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp", "opc", "cg"], num_classes=3, resolution=32)
    g = torch.Generator().manual_seed(1)
    batches = [ClipBatch(video=torch.rand(2, 3, 16, 32, 32, generator=g), label=torch.tensor([0, 2]), keys=["a", "b"])
               for _ in range(2)]
    seen = []
    report = evaluate_tasks(pipe, batches, fvd_extractor=MeanColour(), progress=False,
                            on_batch=lambda name, c, gen, real: seen.append(name))
    assert seen == ["fp", "opc", "cg"]
    assert set(report.tasks) == {"fp", "opc", "cg"}
    for name, s in report.tasks.items():
        assert s.num_clips == 4 and s.fvd is not None and s.fvd >= 0
        assert math.isfinite(s.psnr_generated) and math.isfinite(s.psnr_trivial)
    assert report.tasks["cg"].psnr_condition is None  # cg has no condition region
    assert report.tasks["cg"].psnr_tokenizer_condition is None
    assert report.tasks["fp"].psnr_condition is not None
    # trivial answer for fp = the decoded padded condition video, scored outside the condition pixels
    video = torch.cat([b.video for b in batches])
    cond = pipe.tasks["fp"].condition(video)
    base = pipe.tokenizer.decode(pipe.tokenizer.encode(cond.video)).clamp(0, 1)
    region = (~cond.mask).expand_as(video)
    mse = ((base - video)[region] ** 2).mean()
    assert report.tasks["fp"].psnr_trivial == pytest.approx(float(-10 * torch.log10(mse)), abs=1e-3)
    # ... and the same decoded condition video scored inside the condition pixels (the copy-the-condition bound)
    inside = cond.mask.expand_as(video)
    mse_in = ((base - video)[inside] ** 2).mean()
    assert report.tasks["fp"].psnr_trivial_condition == pytest.approx(float(-10 * torch.log10(mse_in)), abs=1e-3)
    assert report.tasks["cg"].psnr_trivial_condition is None
    assert report.fvd["num_real"] == 4 and report.tokenizer_psnr > 0


class CountingColour(MeanColour):
    """MeanColour that counts its calls (the clips it saw)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, video):
        self.calls += 1
        return super().forward(video)


def test_decode_seed_keeps_single_run_seeds_and_separates_repeats():
    from magvit.metrics.evaluation import decode_seed

    assert [decode_seed(0, 0, i) for i in (0, 2, 4)] == [0, 2, 4]
    assert decode_seed(7, 1, 2) == 7 + 2 + 2**24 and decode_seed(0, 2, 0) == 2**25
    assert decode_seed(2**32 - 1, 0, 1) == 0  # torch keeps 32 bits of a seed: wrap explicitly


def test_repeats_report_mean_and_std_with_every_repeat_kept(tmp_path):
    import json

    from magvit.metrics.evaluation import mean_and_std

    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32, prompt_sharing="none")
    g = torch.Generator().manual_seed(1)
    batches = [ClipBatch(video=torch.rand(2, 3, 16, 32, 32, generator=g), label=torch.tensor([0, 1]), keys=["a", "b"])]
    extractor = CountingColour()
    options = {"choice_temperature": 1.0, "schedule": "linear"}
    report = evaluate_tasks(pipe, batches, ["opc", "unc"], fvd_extractor=extractor, steps=2, repeats=3,
                            sampler_options=options)
    # the single-task fp model is scored on tasks it was not trained on (paper Table 4)
    assert list(report.tasks) == ["opc", "unc"] and report.num_repeats == 3
    # real features once per batch, then one call per task and repeat
    assert extractor.calls == 1 + 2 * 3
    std = report.std()
    for name, runs in report.repeats.items():
        assert len(runs) == 3 and all(r.num_clips == 2 and r.fvd is not None for r in runs)
        for key in ("psnr_generated", "psnr", "ssim", "fvd"):
            values = [getattr(r, key) for r in runs]
            assert getattr(report.tasks[name], key) == pytest.approx(sum(values) / 3)
            assert std[name][key] == pytest.approx(mean_and_std(values)[1])
        # different seeds give different generations; the trivial answer does not depend on them
        assert len({r.psnr_generated for r in runs}) == 3
        assert std[name]["psnr_trivial"] == pytest.approx(0.0, abs=1e-9)
    # repeat 0 is the single run with the same seed
    single = evaluate_tasks(pipe, batches, ["unc"], fvd_extractor=MeanColour(), steps=2, sampler_options=options)
    assert single.tasks["unc"] == report.repeats["unc"][0] and single.repeats == {}
    assert report.decoding == {"sampler": {"name": "commit", "config": {"choice_temperature": 1.0, "temperature": 1.0,
                                                                        "schedule": "linear"}},
                               "steps": 2, "guidance_scale": 0.0, "guidance_task": None, "seed": 0, "repeats": 3,
                               "precision": "32"}
    report.write(tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["fvd"] for r in saved["repeats"]["opc"]] == [r.fvd for r in report.repeats["opc"]]
    assert saved["std"]["opc"]["fvd"] == pytest.approx(std["opc"]["fvd"])
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("task,statistic,psnr_generated") and rows[1].startswith("opc,mean,")
    assert [r.split(",")[1] for r in rows[1:6]] == ["mean", "std", "repeat 0", "repeat 1", "repeat 2"]
    table = report.table()
    m, s = report.tasks["opc"].psnr_generated, std["opc"]["psnr_generated"]
    assert f"{m:.2f}±{s:.2f}" in table and "mean±std over 3 repeats" in table


def test_repeats_must_be_a_positive_count():
    from magvit.errors import InputError

    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32)
    with pytest.raises(InputError, match="repeats must be an int >= 1"):
        evaluate_tasks(pipe, [], repeats=0, fvd_extractor=None)
