"""The training side of the built-in samplers: COMMIT (paper Eq. 2), latent masking and prefix condition
(paper Table 5) and the autoregressive baseline (Table 6), as case tables on four tokens."""

import pytest
import torch

from magvit.masking import LossWeights, random_mask
from magvit.samplers import (
    ARSampler,
    CommitSampler,
    MaskGITSampler,
    PrefixSampler,
    commit_masking,
    latent_masking,
    lm_inputs,
    prefix_condition,
)

# -- COMMIT (Eq. 2) ---------------------------------------------------------------------------------

MASK_ID = 99
Z = torch.tensor([[10, 11, 12, 13]])
ZC = torch.tensor([[20, 21, 22, 23]])
COND = torch.tensor([[True, False, True, False]])
MASKED = torch.tensor([[True, True, False, False]])


def test_commit_case_table():
    out = commit_masking(Z, ZC, COND, MASKED, MASK_ID, LossWeights(refine=2.0, mask=3.0, recons=5.0))
    # masked & cond -> z~; masked & ~cond -> [MASK]; unmasked -> z (whatever the condition)
    assert out.inputs.tolist() == [[20, MASK_ID, 12, 13]]
    assert out.targets.tolist() == Z.tolist()
    assert out.weights.tolist() == [[2.0, 3.0, 5.0, 5.0]]
    assert torch.equal(out.masked, MASKED)


def test_commit_default_weights_are_all_one():
    out = commit_masking(Z, ZC, COND, MASKED, MASK_ID)
    assert out.weights.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_commit_without_condition_is_maskgit():
    out = commit_masking(Z, ZC, torch.zeros_like(COND), MASKED, MASK_ID)
    assert out.inputs.tolist() == [[MASK_ID, MASK_ID, 12, 13]]


def test_commit_counts_on_full_grid():
    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, 64, (2, 1024), generator=g)
    zc = torch.randint(64, 128, (2, 1024), generator=g)
    cond = torch.zeros(2, 1024, dtype=torch.bool)
    cond[:, :256] = True
    masked = random_mask((2, 1024), 0.5, g)
    out = commit_masking(z, zc, cond, masked, 999)
    assert ((out.inputs == 999).sum(1) == (masked & ~cond).sum(1)).all()
    assert ((out.inputs >= 64) & (out.inputs < 128)).sum(1).tolist() == (masked & cond).sum(1).tolist()
    assert (out.inputs[~masked] == z[~masked]).all()
    assert masked.sum(1).tolist() == [512, 512]


def test_latent_masking_case_table():
    out = latent_masking(Z, ZC, COND, MASKED, MASK_ID, LossWeights(refine=2.0, mask=3.0, recons=5.0))
    # condition positions always z~; elsewhere masked -> [MASK], unmasked -> z
    assert out.inputs.tolist() == [[20, MASK_ID, 22, 13]]
    assert out.weights.tolist() == [[2.0, 3.0, 2.0, 5.0]]
    assert out.masked.tolist() == [[False, True, False, False]]
    # the authors' default weight_mode 'mask+refine+recons': every maskable position
    assert latent_masking(Z, ZC, COND, MASKED, MASK_ID).weights.tolist() == [[0.0, 1.0, 0.0, 1.0]]


def test_latent_masking_ground_truth_variant():
    """input->input of the authors' random_mask: the condition positions hold the ground truth."""
    out = MaskGITSampler(unmaskable="ground_truth").training_inputs(Z, ZC, COND, MASKED, MASK_ID)
    assert out.inputs.tolist() == [[10, MASK_ID, 12, 13]]
    assert MaskGITSampler().maskable(COND).tolist() == [[False, True, False, True]]


def test_prefix_and_ar_default_weights_are_the_authors():
    assert PrefixSampler().training_inputs(Z, ZC, COND, MASKED, MASK_ID).weights.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    out = ARSampler().training_inputs(Z, ZC, COND, MASKED, MASK_ID, LossWeights(refine=2.0, mask=3.0, recons=5.0))
    assert out.inputs.tolist() == Z.tolist() and out.masked.all()
    assert out.prefix.tolist() == [[20, 22]] and out.prefix_index.tolist() == [[0, 2]]
    assert out.weights.tolist() == [[2.0, 3.0, 2.0, 3.0]]


def test_prefix_condition_case_table():
    out = prefix_condition(Z, ZC, COND, MASKED, MASK_ID, LossWeights(refine=2.0, mask=3.0, recons=5.0))
    assert out.prefix.tolist() == [[20, 22]]
    assert out.prefix_index.tolist() == [[0, 2]]
    assert out.inputs.tolist() == [[MASK_ID, MASK_ID, 12, 13]]
    assert out.weights.tolist() == [[3.0, 3.0, 5.0, 5.0]]


def test_prefix_condition_rejects_ragged_batch():
    cond = torch.tensor([[True, False], [True, True]])
    with pytest.raises(ValueError, match="same number"):
        prefix_condition(torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long), cond,
                         torch.ones(2, 2, dtype=torch.bool), 5)


def test_masking_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="token shape"):
        commit_masking(Z, ZC[:, :3], COND, MASKED, MASK_ID)


@pytest.mark.parametrize("sampler,function", [(CommitSampler(), commit_masking), (MaskGITSampler(), latent_masking),
                                              (PrefixSampler(), prefix_condition),
                                              (ARSampler(), lambda z, zc, c, m, i, w: lm_inputs(z, zc, c, w))])
def test_sampler_training_inputs_are_its_function_with_its_default_weights(sampler, function):
    ours = sampler.training_inputs(Z, ZC, COND, MASKED, MASK_ID)
    theirs = function(Z, ZC, COND, MASKED, MASK_ID, sampler.default_weights)
    assert torch.equal(ours.inputs, theirs.inputs) and torch.equal(ours.weights, theirs.weights)
    weights = LossWeights(refine=2.0, mask=3.0, recons=5.0)
    assert torch.equal(sampler.training_inputs(Z, ZC, COND, MASKED, MASK_ID, weights).weights,
                       function(Z, ZC, COND, MASKED, MASK_ID, weights).weights)
