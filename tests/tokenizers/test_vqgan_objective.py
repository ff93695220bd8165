"""VQGANObjective (as ``train_g_d``): generator/discriminator steps, GAN start, perceptual warning."""

import warnings

import pytest
import torch

from magvit.registry import get_tokenizer
from magvit.tokenizers.discriminator import build_discriminator
from magvit.tokenizers.objective import VQGANObjective


def _objective(**kw) -> VQGANObjective:
    tokenizer = get_tokenizer("vq3d", preset="tiny")
    disc = build_discriminator("tiny", 16, frames=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VQGANObjective(tokenizer, disc, **kw)


def test_missing_perceptual_weights_warns_once_not_per_step(make_clips):
    tokenizer = get_tokenizer("vq3d", preset="tiny")
    with pytest.warns(UserWarning, match="perceptual loss is off"):
        objective = VQGANObjective(tokenizer, build_discriminator("tiny", 16, frames=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            objective.generator_loss(make_clips(1, 4, 16))


def test_generator_loss_sums_the_terms_and_leaves_discriminator_without_grad(make_clips):
    objective = _objective()
    video = make_clips(2, 4, 16)
    loss, recon, logs = objective.generator_loss(video, step=0)
    expected = logs["g/l2"] + 0.1 * logs["g/adversarial"] + logs["g/quantizer"]
    assert abs(loss.item() - expected) < 1e-5 and recon.shape == video.shape
    assert logs["g/adversarial"] > 0 and logs["g/usage"] > 0 and logs["g/perplexity"] >= 1
    loss.backward()
    assert all(p.grad is None for p in objective.discriminator.parameters())
    assert objective.tokenizer.encoder.conv_in.weight.grad.abs().sum() > 0


def test_gan_steps_change_weights_and_lecam_ema(make_clips):
    objective = _objective(lecam_weight=0.001, lecam_decay=0.9)
    opt_g = torch.optim.Adam(objective.tokenizer.parameters(), lr=1e-4, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(objective.discriminator.parameters(), lr=1e-4, betas=(0.0, 0.99))
    video = make_clips(2, 4, 16)
    g_before = objective.tokenizer.decoder.conv_out.weight.detach().clone()
    d_before = objective.discriminator.logit.weight.detach().clone()
    loss, recon, _ = objective.generator_loss(video)
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    d_loss, logs = objective.discriminator_loss(video, recon)
    assert logs["d/r1"] > 0 and "d/lecam" in logs
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    assert not torch.equal(objective.tokenizer.decoder.conv_out.weight, g_before)
    assert not torch.equal(objective.discriminator.logit.weight, d_before)
    assert abs(objective.lecam.ema_real.item() - 0.1 * logs["d/real_logit"]) < 1e-6
    assert abs(objective.lecam.ema_fake.item() - 0.1 * logs["d/fake_logit"]) < 1e-6


def test_discriminator_start_step_gates_gan_terms(make_clips):
    objective = _objective(discriminator_start_step=10)
    video = make_clips(1, 4, 16)
    _, recon, logs = objective.generator_loss(video, step=3)
    assert logs["g/adversarial"] == 0.0 and not objective.gan_active(3) and objective.gan_active(10)
    d_loss, _ = objective.discriminator_loss(video, recon, step=3)
    assert d_loss.item() == 0.0


def test_losses_call_the_modules_they_are_given(make_clips):
    # the trainer passes DDP wrappers; the objective must call them, not its own references
    objective = _objective()
    video = make_clips(1, 4, 16)
    calls = []

    def tokenizer(x):
        calls.append("g")
        return objective.tokenizer(x)

    def discriminator(x):
        calls.append(("d", x.shape[0]))
        return objective.discriminator(x)

    _, recon, _ = objective.generator_loss(video, tokenizer=tokenizer)
    objective.discriminator_loss(video, recon, discriminator=discriminator)
    assert calls == ["g", ("d", 2)]  # one discriminator pass over real and fake together


def test_per_frame_discriminator_scores_each_judged_frame_as_an_image(make_clips):
    """The 2D-VQ's discriminator: one logit per judged frame, real and fake split per frame, R1 a mean over images."""
    tokenizer = get_tokenizer("vq2d", preset="tiny")
    disc = build_discriminator("tiny", 16, frames=2, spatial_dims=2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objective = VQGANObjective(tokenizer, disc)
    video = make_clips(2, 4, 16)
    recon = make_clips(2, 4, 16, seed=1)
    judged = lambda clips: clips[:, :, 1:3]  # noqa: E731 - the same two frames of every clip
    loss, logs = objective.discriminator_loss(video, recon, judged=judged)
    real = video[:, :, 1:3].clone().requires_grad_(True)
    real_logits = disc(real)
    (grad,) = torch.autograd.grad(real_logits.sum(), real)
    fake_logits = disc(recon[:, :, 1:3])
    assert real_logits.shape == (4,)  # 2 clips x 2 frames
    r1 = 10.0 * grad.pow(2).sum(dim=(1, 3, 4)).mean()  # per image (frame), mean over the 4 images
    adversarial = torch.nn.functional.softplus(-real_logits).mean() + torch.nn.functional.softplus(fake_logits).mean()
    assert logs["d/r1"] == pytest.approx(r1.item(), rel=1e-5)
    assert logs["d/adversarial"] == pytest.approx(adversarial.item(), rel=1e-5)
    assert loss.item() == pytest.approx((r1 + adversarial).item(), rel=1e-5)
    g_loss, _, g_logs = objective.generator_loss(video, judged=judged)
    assert torch.isfinite(g_loss) and g_logs["g/adversarial"] > 0
