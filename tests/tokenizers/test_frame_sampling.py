"""Frames sampled per clip (the 2D-VQ's training input): distinct, in temporal order, seeded, differentiable."""

import pytest
import torch

from magvit.errors import InputError
from magvit.tokenizers.frame_sampling import frame_indices, sample_frames


def test_indices_are_distinct_increasing_and_seeded():
    a = frame_indices(64, 8, 3, torch.Generator().manual_seed(5))
    b = frame_indices(64, 8, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (64, 3) and a.dtype == torch.long
    assert bool((a[:, 1:] > a[:, :-1]).all()) and int(a.min()) >= 0 and int(a.max()) <= 7
    assert len({tuple(r) for r in a.tolist()}) > 1  # each clip draws its own frames
    # uniform over the frames: every frame is drawn
    assert set(frame_indices(256, 8, 1, torch.Generator().manual_seed(0)).flatten().tolist()) == set(range(8))


def test_sample_frames_gathers_each_clips_own_frames(ramp):
    video = ramp(3, 6, 4).float()
    out = sample_frames(video, 2, torch.Generator().manual_seed(1))
    index = frame_indices(3, 6, 2, torch.Generator().manual_seed(1))
    assert out.shape == (3, 3, 2, 4, 4)
    for b in range(3):
        assert torch.equal(out[b], video[b][:, index[b]])


def test_all_frames_is_the_video_itself_and_draws_nothing():
    video = torch.rand(2, 3, 4, 8, 8)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    assert sample_frames(video, 4, g) is video and torch.equal(g.get_state(), state)


def test_gradient_reaches_only_the_sampled_frames():
    video = torch.rand(1, 3, 5, 4, 4, requires_grad=True)
    sample_frames(video, 2, torch.Generator().manual_seed(0)).sum().backward()
    per_frame = video.grad[0, 0, :, 0, 0]
    assert sorted(per_frame.tolist()) == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("k", [0, 6])
def test_impossible_counts_are_refused(k):
    with pytest.raises(InputError, match=r"cannot sample .* distinct frames per clip from clips of 5 frames"):
        sample_frames(torch.rand(1, 3, 5, 4, 4), k)
