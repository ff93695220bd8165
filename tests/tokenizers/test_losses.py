"""GAN, R1, LeCam and perceptual losses (the authors' ``videogvt/train_lib/losses.py``)."""

import math

import pytest
import timm
import torch
from safetensors.torch import save_file

from magvit.errors import MagvitError
from magvit.tokenizers.discriminator import build_discriminator
from magvit.tokenizers.losses import (
    LeCam,
    PerceptualLoss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    l2_loss,
    r1_penalty,
)


def test_non_saturating_losses_exact():
    assert math.isclose(generator_adversarial_loss(torch.zeros(4)).item(), math.log(2), rel_tol=1e-6)
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    expected = math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))
    assert math.isclose(discriminator_adversarial_loss(real, fake).item(), expected, rel_tol=1e-6)


def test_r1_matches_analytic_gradient_of_a_linear_critic():
    w = torch.tensor([1.0, -2.0, 3.0])
    penalty, logits = r1_penalty(lambda x: x @ w, torch.rand(5, 3), cost=10.0)
    assert torch.isclose(penalty, torch.tensor(10.0 * 14.0))
    assert logits.shape == (5,)


def test_r1_is_positive_and_trains_the_discriminator():
    d = build_discriminator("tiny", 16, frames=4)
    penalty, _ = r1_penalty(d, torch.rand(2, 3, 4, 16, 16))
    assert penalty.item() > 0
    penalty.backward()
    assert d.conv_in.weight.grad is not None and d.conv_in.weight.grad.abs().sum() > 0


def test_lecam_ema_update_and_value():
    lecam = LeCam(decay=0.9)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    assert torch.isclose(lecam(real, fake), torch.tensor(2.0**2 + 1.0**2))  # anchors at 0
    lecam.update(real, fake)
    assert torch.isclose(lecam.ema_real, torch.tensor(0.2)) and torch.isclose(lecam.ema_fake, torch.tensor(-0.1))
    lecam.update(real, fake)
    assert torch.isclose(lecam.ema_real, torch.tensor(0.9 * 0.2 + 0.2))
    assert "ema_real" in lecam.state_dict()


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet10t.safetensors"
    net = timm.create_model("resnet10t", pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_perceptual_loss_from_local_file(resnet_file):
    loss = PerceptualLoss(resnet_file, arch="resnet10t")
    video = torch.rand(1, 3, 2, 16, 16)
    assert loss(video, video).item() == 0.0
    recon = (video + 0.1 * torch.rand_like(video)).clamp(0, 1).requires_grad_(True)
    value = loss(video, recon)
    assert value.item() > 0
    value.backward()
    assert recon.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.net.parameters())
    assert not loss.train().net.training


def test_perceptual_loss_rejects_mismatched_or_missing_file(resnet_file, tmp_path):
    with pytest.raises(MagvitError, match="not found"):
        PerceptualLoss(tmp_path / "nope.pt")
    with pytest.raises(MagvitError, match="does not match"):
        PerceptualLoss(resnet_file, arch="resnet18")


def test_every_term_is_float32_under_autocast_from_low_precision_inputs(resnet_file):
    """The terms take float32 of what autocast hands them: the value equals the float32 loss of the same
    (already rounded) inputs, and its dtype is float32."""
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 2, 16, 16, generator=g)
    recon = (video + 0.01 * torch.randn(video.shape, generator=g)).bfloat16()
    real, fake = torch.randn(4, generator=g).bfloat16(), torch.randn(4, generator=g).bfloat16()
    lecam = LeCam(decay=0.9)
    lecam.update(real.float() + 1, fake.float() - 1)
    d = build_discriminator("tiny", 16, frames=2)
    perceptual = PerceptualLoss(resnet_file, arch="resnet10t")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = {
            "l2": (l2_loss(video, recon), l2_loss(video, recon.float())),
            "g": (generator_adversarial_loss(fake), generator_adversarial_loss(fake.float())),
            "d": (discriminator_adversarial_loss(real, fake), discriminator_adversarial_loss(real.float(), fake.float())),
            "lecam": (lecam(real, fake), lecam(real.float(), fake.float())),
            "r1": (r1_penalty(d, video)[0], None),
            "perceptual": (perceptual(video, recon), None),
        }
    for name, (value, reference) in values.items():
        assert value.dtype == torch.float32 and bool(torch.isfinite(value)), name
        if reference is not None:
            assert torch.equal(value, reference), name
