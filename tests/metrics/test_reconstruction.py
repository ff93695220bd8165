"""Reconstruction metrics of a tokenizer (paper Table 7): PSNR, SSIM and FVD of decode(encode(clip))."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from magvit.batch import ClipBatch
from magvit.errors import MagvitError
from magvit.metrics.fvd import FrechetVideoDistance
from magvit.metrics.quality import VideoPSNR, VideoSSIM
from magvit.metrics.reconstruction import TokenizerSource, evaluate_reconstruction
from magvit.registry import get_tokenizer


class MeanColour(nn.Module):
    """A tiny deterministic feature extractor: per-channel means and stds (6 features)."""

    num_features = 6

    def forward(self, video):
        return torch.cat([video.mean(dim=(2, 3, 4)), video.std(dim=(2, 3, 4))], dim=1)


def _batches() -> list[ClipBatch]:
    g = torch.Generator().manual_seed(1)
    return [ClipBatch(video=torch.rand(2, 3, 4, 16, 16, generator=g), label=torch.zeros(2, dtype=torch.long),
                      keys=[f"{i}a", f"{i}b"]) for i in range(2)]


def test_scores_are_the_quality_metrics_of_the_reconstructions(tmp_path):
    tokenizer = get_tokenizer("vq3d", preset="tiny", seed=3).eval()
    batches = _batches()
    source = TokenizerSource("vq3d", "tok.pt", "ema")
    report = evaluate_reconstruction(tokenizer, batches, fvd_extractor=MeanColour(), source=source, max_clips=3)
    psnr, ssim, fvd = VideoPSNR(), VideoSSIM(), FrechetVideoDistance(MeanColour(), num_features=6)
    for video in (batches[0].video, batches[1].video[:1]):  # max_clips=3
        recon = tokenizer.decode(tokenizer.encode(video))
        psnr.update(recon, video), ssim.update(recon, video)
        fvd.update(video, real=True), fvd.update(recon, real=False)
    s = report.scores
    assert s.num_clips == 3
    assert s.psnr == pytest.approx(float(psnr.compute()), rel=1e-6)
    assert s.ssim == pytest.approx(float(ssim.compute()), rel=1e-6)
    assert s.fvd == pytest.approx(fvd.result().fvd, rel=1e-6)
    protocol = report.fvd_protocol
    assert protocol["extractor"] == "MeanColour" and protocol["num_real"] == protocol["num_fake"] == 3
    assert protocol["min_frames"] == 4 and protocol["follows_reference_protocol"] is False
    assert "fvd" not in protocol

    path = report.write(tmp_path)
    saved = json.loads(path.read_text())
    assert saved["tokenizer"] == {"name": "vq3d", "checkpoint": "tok.pt", "weights": "ema"}
    assert saved["reconstruction"]["psnr"] == pytest.approx(s.psnr) and saved["fvd_protocol"]["num_real"] == 3
    table = report.table()
    assert "reconstruction of vq3d (EMA weights of tok.pt)" in table and f"{s.psnr:.2f}" in table


def test_without_fvd_nothing_about_it_is_reported():
    tokenizer = get_tokenizer("vq2d", preset="tiny").eval()
    report = evaluate_reconstruction(tokenizer, _batches(), fvd_extractor=None)
    assert report.scores.fvd is None and report.fvd_protocol is None and report.scores.num_clips == 4
    assert report.to_json()["tokenizer"] is None


def test_no_clip_is_an_error():
    with pytest.raises(MagvitError, match="yielded no clip"):
        evaluate_reconstruction(get_tokenizer("vq3d", preset="tiny"), [], fvd_extractor=None)
