"""The temporal super-resolution plugin: registration and exact condition values."""

import pytest
import torch

from magvit import registry
from magvit.masking import condition_token_mask


def test_registered_via_entry_point():
    assert "tsr" in registry.task_names()
    assert registry.default_registry().entry("task", "tsr").plugin == "tsr"


def test_keeps_every_fourth_frame_and_blends():
    clip = torch.rand(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    cond = registry.get_task("tsr").condition(clip)
    assert cond.mask[0, 0, :, 0, 0].nonzero().flatten().tolist() == [0, 4, 8, 12]
    for kept in (0, 4, 8, 12):
        assert torch.equal(cond.video[:, :, kept], clip[:, :, kept])
    for j in (1, 2, 3):
        torch.testing.assert_close(cond.video[:, :, 4 + j], clip[:, :, 4] + (clip[:, :, 8] - clip[:, :, 4]) * j / 4)
    for t in (13, 14, 15):  # after the last kept frame: repeated
        assert torch.equal(cond.video[:, :, t], clip[:, :, 12])
    # every latent frame of a 4x4x4 tokenizer holds one kept frame
    assert condition_token_mask(cond.mask, (4, 4, 4)).all()


def test_stride_two_and_validation():
    clip = torch.rand(1, 3, 8, 16, 16)
    cond = registry.get_task("tsr", stride=2).condition(clip)
    assert cond.mask[0, 0, :, 0, 0].tolist() == [True, False] * 4
    with pytest.raises(ValueError, match="stride"):
        registry.get_task("tsr", stride=1)
    with pytest.raises(ValueError, match="too small"):
        registry.get_task("tsr").condition(torch.rand(1, 3, 4, 16, 16))


def test_title_and_description_for_the_report_page():
    from magvit.protocols import task_description, task_title

    assert task_title(registry.get_task("tsr")) == "temporal super-resolution"
    assert [task_description(registry.get_task("tsr", stride=s)) for s in (2, 3, 4, 11, 21)] == [
        f"every {n} frame is given, the frames between are generated" for n in ("2nd", "3rd", "4th", "11th", "21st")]
