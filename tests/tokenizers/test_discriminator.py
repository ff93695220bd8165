"""The 3D StyleGAN discriminator (the authors' ``videogvt/models/stylegan_discriminator_3d.py``)."""

import pytest
import torch

from magvit.errors import InputError
from magvit.tokenizers.discriminator import StyleGANDiscriminator, build_discriminator


def test_128px_head_sees_time_collapsed_to_one():
    with torch.device("meta"):
        d = build_discriminator("B", 128)
    assert len(d.blocks) == 5
    assert d.dense.in_features == 256 * 1 * 4 * 4  # T 16->8->4->2->1->1, H,W 128->4
    with torch.device("meta"):
        d64 = build_discriminator("L", 64)
    assert len(d64.blocks) == 4 and d64.dense.in_features == 512 * 1 * 4 * 4


def test_no_norm_and_xavier_init():
    d = build_discriminator("tiny", 32, frames=8)
    assert not any(isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm3d)) for m in d.modules())
    w = d.conv_in.weight
    fan_in, fan_out = 3 * 27, 16 * 27
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound and not d.conv_in.bias.any()


def test_logits_shape_and_input_check():
    d = build_discriminator("tiny", 32, frames=8)
    assert d(torch.rand(3, 3, 8, 32, 32)).shape == (3,)
    with pytest.raises(InputError, match=r"\[B, 3, 8, 32, 32\]"):
        d(torch.rand(1, 3, 8, 16, 16))


def test_config_rebuilds():
    d = build_discriminator("tiny", 32, frames=8, seed=4)
    again = StyleGANDiscriminator(**d.config)
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), again.state_dict().values()))
