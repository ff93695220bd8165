"""I3D architecture with random init: TF 'SAME' semantics, TF batch norm, shapes and time averaging."""

import math

import pytest
import torch
from safetensors.torch import save_file

from magvit.checkpoint import file_sha256
from magvit.errors import InputError, MagvitError
from magvit.metrics import I3D
from magvit.metrics.cache import CACHE_ENV, default_i3d_path
from magvit.metrics.i3d import MaxPoolSame3d, TFBatchNorm3d, Unit3D, same_padding


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (224, 7, 2, (2, 3)),  # Conv3d_1a spatially: odd total pad, the extra one goes after
    (112, 3, 2, (0, 1)),  # MaxPool3d_2a
    (9, 7, 2, (3, 3)),    # Conv3d_1a in time for a 9-frame clip
    (4, 3, 2, (0, 1)),
    (7, 2, 2, (0, 1)),    # MaxPool3d_5a on an odd map
    (8, 2, 2, (0, 0)),
    (5, 1, 1, (0, 0)),
    (5, 3, 1, (1, 1)),
])
def test_same_padding_matches_tf(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_strided_conv_pads_after_like_tf():
    unit = Unit3D(1, 1, (1, 1, 3), (1, 1, 2), batch_norm=False, relu=False)
    with torch.no_grad():
        unit.conv.weight.fill_(1.0)
        unit.conv.bias.zero_()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    # TF SAME: windows [1,2,3] and [3,4,pad0]; a symmetric pad of 1 would give [0,1,2] -> 3 and [2,3,4] -> 9.
    assert unit(x).flatten().tolist() == [6.0, 7.0]


def test_max_pool_pads_with_minus_infinity():
    pool = MaxPoolSame3d((1, 1, 3), (1, 1, 2))
    x = torch.tensor([-1.0, -2.0, -3.0, -4.0]).view(1, 1, 1, 1, 4)
    # A zero pad would win the second window and return 0.
    assert pool(x).flatten().tolist() == [-1.0, -3.0]


def test_tf_batch_norm_has_offset_only_and_eps_1e_3():
    bn = TFBatchNorm3d(1)
    bn.running_mean.fill_(2.0)
    bn.running_var.fill_(3.0)
    with torch.no_grad():
        bn.bias.fill_(0.5)
    out = bn(torch.full((1, 1, 1, 1, 1), 5.0, dtype=torch.float32))
    assert out.item() == pytest.approx(3.0 / math.sqrt(3.001) + 0.5, rel=1e-6)
    assert [name for name, _ in bn.named_parameters()] == ["bias"]


@pytest.fixture(scope="module")
def model() -> I3D:
    torch.manual_seed(0)
    return I3D()


def test_parameter_count_matches_kinetics_i3d(model):
    # 12,689,984 learned values and 14,560 moving statistics, as in DeepMind's released checkpoint.
    assert sum(p.numel() for p in model.parameters()) == 12_689_984
    assert sum(b.numel() for b in model.buffers()) == 14_560
    assert model.weights_sha256 == "random-init"


def test_full_size_clip_gives_400_logits(model):
    video = torch.rand(1, 3, 9, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        per_position = model.logits_per_position(video)
        logits = model(video)
    # 9 frames -> ceil(9/8) = 2 time steps after Mixed_5c; the (2, 7, 7) VALID pool leaves one position.
    assert per_position.shape == (1, 400, 1, 1, 1)
    assert logits.shape == (1, 400)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("frames", "positions"), [(24, 2), (17, 2), (9, 1), (4, 1)])
def test_logits_are_averaged_over_time_positions(model, frames, positions):
    video = torch.rand(2, 3, frames, 32, 32, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    with torch.no_grad():
        features = model.features(video)
        per_position = model.logits_per_position(video)
        logits = model(video)
    assert features.shape == (2, 1024, math.ceil(frames / 8), 1, 1)
    assert per_position.shape == (2, 400, positions, 1, 1)
    torch.testing.assert_close(logits, per_position.mean(dim=(2, 3, 4)), rtol=0, atol=0)


def test_bad_input_is_a_clear_error(model):
    with pytest.raises(InputError, match=r"\[B, 3, T, H, W\]"):
        model(torch.zeros(1, 4, 9, 32, 32))
    with pytest.raises(InputError, match="float"):
        model(torch.zeros(1, 3, 9, 32, 32, dtype=torch.uint8))


def test_missing_weights_tell_the_user_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_i3d_path() == tmp_path / "i3d_k400.safetensors"
    with pytest.raises(MagvitError, match="magvit weights i3d"):
        I3D.from_pretrained()


def test_from_pretrained_loads_a_state_dict_file_and_records_its_hash(model, tmp_path):
    path = tmp_path / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = I3D.from_pretrained(path)
    assert loaded.weights_sha256 == file_sha256(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_from_pretrained_rejects_a_foreign_state_dict(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(MagvitError, match="not an I3D state dict"):
        I3D.from_pretrained(path)
