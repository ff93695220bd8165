"""On a CUDA device (skipped elsewhere): the B transformer trains a few steps in bf16 autocast with fused
(flash or memory-efficient) attention and its loss falls."""

import pytest
import torch

from magvit.precision import Precision
from magvit.transformer import MaskedTransformer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_b_transformer_trains_in_bf16_with_fused_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = torch.device("cuda")
    model = MaskedTransformer.from_preset("B", codebook_size=1024, num_classes=0, prompts=["fp"],
                                          num_tokens=1024).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    target = torch.randint(0, 1024, (4, 1024), device=device, generator=g)
    masked = torch.rand(4, 1024, device=device, generator=g) < 0.5
    ids = torch.where(masked, torch.full_like(target, model.vocab.mask_id), target)
    prompt = torch.full((4,), model.vocab.prompt_id("fp"), dtype=torch.long, device=device)
    label = model.vocab.class_ids(None, 4, device)
    precision = Precision("bf16-mixed")
    losses = []
    # Only the fused kernels: the math fallback would make the step pass without them.
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        for _ in range(5):
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast(device):
                logits = model(ids, prompt, label)
            loss = torch.nn.functional.cross_entropy(logits.float()[masked], target[masked])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32
