"""Every built-in task's region and padding, pinned on concrete pixel values (as the authors'
``videogvt/train_lib/cond_utils_test.py``)."""

import pytest
import torch

from magvit.registry import get_task
from magvit.tasks.base import sliding_offsets

S64 = [0, 2, 4, 6, 9, 11, 13, 15, 17, 19, 21, 23, 26, 28, 30, 32]
S128 = [0, 4, 9, 13, 17, 21, 26, 30, 34, 38, 43, 47, 51, 55, 60, 64]


@pytest.mark.parametrize("size,expected", [(64, S64), (128, S128)])
def test_sliding_offsets_round_half_to_even(size, expected):
    assert sliding_offsets(16, size).tolist() == expected


@pytest.fixture(params=[64, 128])
def clip(request, ramp):
    return ramp(2, 16, request.param)


def test_fp_repeats_last_condition_frame(clip):
    cond = get_task("fp").condition(clip)
    assert torch.equal(cond.video, clip[:, :, :1].expand_as(clip))
    assert cond.mask[:, :, 0].all() and not cond.mask[:, :, 1:].any()
    assert cond.mask.shape == (2, 1, 16, clip.shape[-2], clip.shape[-1]) and cond.mask.dtype == torch.bool


def test_fp_five_frames(clip):
    cond = get_task("fp", cond_frames=5).condition(clip)
    assert torch.equal(cond.video[:, :, :5], clip[:, :, :5])
    for t in range(5, 16):
        assert torch.equal(cond.video[:, :, t], clip[:, :, 4])
    assert cond.mask[:, :, :5].all() and not cond.mask[:, :, 5:].any()


def test_cfp_is_fp_with_label(clip):
    fp, cfp = get_task("fp"), get_task("cfp")
    assert cfp.uses_class and not fp.uses_class
    assert torch.equal(cfp.condition(clip).video, fp.condition(clip).video)
    assert torch.equal(cfp.condition(clip).mask, fp.condition(clip).mask)


def test_fi_linear_blend(clip):
    cond = get_task("fi").condition(clip)
    f0, f15 = clip[:, :, 0], clip[:, :, 15]
    for k in range(16):
        torch.testing.assert_close(cond.video[:, :, k], f0 + (f15 - f0) * k / 15, rtol=0, atol=1e-12)
    assert torch.equal(cond.video[:, :, 0], f0) and torch.equal(cond.video[:, :, 15], f15)
    assert cond.mask[:, :, [0, 15]].all() and not cond.mask[:, :, 1:15].any()


def test_fi_two_frames_blend_between_inner_condition_frames(ramp):
    clip = ramp(1, 16, 64)
    cond = get_task("fi", cond_frames=2).condition(clip)
    a, b = clip[:, :, 1], clip[:, :, 14]
    for j in range(1, 13):  # L = 12 frames, fractions j / 13
        torch.testing.assert_close(cond.video[:, :, 1 + j], a + (b - a) * j / 13, rtol=0, atol=1e-12)
    assert cond.mask[0, 0, :, 0, 0].tolist() == [True, True] + [False] * 12 + [True, True]


def test_opc_box_and_edge_replication(clip):
    size = clip.shape[-1]
    lo, hi = size // 4, 3 * size // 4
    cond = get_task("opc").condition(clip)
    v, c = clip, cond.video
    assert torch.equal(c[..., lo:hi, lo:hi], v[..., lo:hi, lo:hi])
    assert torch.equal(c[..., 0, 0], v[..., lo, lo])  # corner takes the corner pixel
    assert torch.equal(c[..., size - 1, size - 1], v[..., hi - 1, hi - 1])
    assert torch.equal(c[..., 0, lo + 3], v[..., lo, lo + 3])  # top border replicated upward
    assert torch.equal(c[..., lo + 5, size - 1], v[..., lo + 5, hi - 1])  # right border replicated
    assert torch.equal(c[..., :lo, lo:hi], v[..., lo : lo + 1, lo:hi].expand_as(c[..., :lo, lo:hi]))
    m = cond.mask
    assert m[..., lo:hi, lo:hi].all() and m.sum() == 2 * 16 * (hi - lo) ** 2


def test_oph_keeps_horizontal_band(clip):
    size = clip.shape[-1]
    lo, hi = size // 4, 3 * size // 4
    cond = get_task("oph").condition(clip)
    assert torch.equal(cond.video[..., lo:hi, :], clip[..., lo:hi, :])
    assert torch.equal(cond.video[..., :lo, :], clip[..., lo : lo + 1, :].expand(-1, -1, -1, lo, -1))
    assert torch.equal(cond.video[..., hi:, :], clip[..., hi - 1 : hi, :].expand(-1, -1, -1, size - hi, -1))
    assert cond.mask[..., lo:hi, :].all() and not cond.mask[..., :lo, :].any() and not cond.mask[..., hi:, :].any()


def test_opv_keeps_vertical_band(clip):
    size = clip.shape[-1]
    lo, hi = size // 4, 3 * size // 4
    cond = get_task("opv").condition(clip)
    assert torch.equal(cond.video[..., lo:hi], clip[..., lo:hi])
    assert torch.equal(cond.video[..., :lo], clip[..., lo : lo + 1].expand(-1, -1, -1, -1, lo))
    assert torch.equal(cond.video[..., hi:], clip[..., hi - 1 : hi].expand(-1, -1, -1, -1, size - hi))
    assert cond.mask[..., lo:hi].all() and not cond.mask[..., :lo].any() and not cond.mask[..., hi:].any()


def test_opd_sliding_band_zero_fill(clip):
    size = clip.shape[-1]
    offsets = S64 if size == 64 else S128
    cond = get_task("opd").condition(clip)
    for t, s in enumerate(offsets):
        band = slice(s, s + size // 2)
        assert torch.equal(cond.video[:, :, t, :, band], clip[:, :, t, :, band])
        assert (cond.video[:, :, t, :, :s] == 0).all() and (cond.video[:, :, t, :, s + size // 2 :] == 0).all()
        assert cond.mask[:, :, t, :, band].all()
        assert cond.mask[:, :, t].sum() == 2 * size * size // 2


def test_ipc_zero_hole(clip):
    size = clip.shape[-1]
    lo, hi = size // 4, 3 * size // 4
    cond = get_task("ipc").condition(clip)
    assert (cond.video[..., lo:hi, lo:hi] == 0).all()
    outside = torch.ones(size, size, dtype=torch.bool)
    outside[lo:hi, lo:hi] = False
    assert torch.equal(cond.video[..., outside], clip[..., outside])
    assert torch.equal(cond.mask[0, 0, 0], outside) and torch.equal(cond.mask[1, 0, 15], outside)


def test_ipd_sliding_zero_hole(clip):
    size = clip.shape[-1]
    lo, hi = size // 4, 3 * size // 4
    offsets = S64 if size == 64 else S128
    cond = get_task("ipd").condition(clip)
    for t, s in enumerate(offsets):
        hole = torch.zeros(size, size, dtype=torch.bool)
        hole[lo:hi, s : s + size // 2] = True
        assert torch.equal(cond.mask[0, 0, t], ~hole)
        assert (cond.video[:, :, t][..., hole] == 0).all()
        assert torch.equal(cond.video[:, :, t][..., ~hole], clip[:, :, t][..., ~hole])


def test_cg_has_no_condition(clip):
    task = get_task("cg")
    cond = task.condition(clip)
    assert task.uses_class and not task.needs_video
    assert not cond.mask.any() and (cond.video == 0).all()


@pytest.mark.parametrize("name", ["fp", "fi", "opc", "oph", "opv", "opd", "ipc", "ipd", "cg", "cfp"])
def test_conditions_are_reproducible_and_keep_range(name, generator, ramp):
    clip = ramp(1, 16, 64).float()
    task = get_task(name)
    a = task.condition(clip, generator=generator)
    b = task.condition(clip, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.video, b.video) and torch.equal(a.mask, b.mask)
    assert a.video.dtype == clip.dtype and a.video.shape == clip.shape
    assert a.video.min() >= 0 and a.video.max() <= 1
    # interior-condition pixels are always the real pixels
    m = a.mask.expand_as(clip)
    assert torch.equal(a.video[m], clip[m])
