"""magvit.precision: the Precision record, and the float32 normalisation layers under autocast."""

import contextlib

import pytest
import torch
from torch import nn

from magvit.errors import InputError
from magvit.precision import Float32GroupNorm, Float32LayerNorm, Precision, autocast_off
from magvit.tokenizers.layers import group_norm
from magvit.train.settings import PRECISIONS, SettingError, TrainerConfig
from magvit.transformer import MaskedTransformer


@pytest.mark.parametrize(("name", "dtype"), [("32", torch.float32), ("bf16-mixed", torch.bfloat16),
                                             ("16-mixed", torch.float16)])
def test_precision_dtype_and_autocast(name, dtype):
    p = Precision(name)
    assert p.dtype == dtype and p.mixed == (name != "32")
    lin = nn.Linear(4, 4)
    with p.autocast(torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") == p.mixed
        assert lin(torch.randn(2, 4)).dtype == dtype  # weights stay float32, the matmul runs in dtype
    assert not torch.is_autocast_enabled("cpu")
    assert lin.weight.dtype == torch.float32
    if not p.mixed:
        assert isinstance(p.autocast("cpu"), contextlib.nullcontext)


def test_grad_scaler_only_for_16_mixed():
    assert Precision("32").grad_scaler("cpu") is None
    assert Precision("bf16-mixed").grad_scaler("cpu") is None
    scaler = Precision("16-mixed").grad_scaler(torch.device("cpu"))
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled() and scaler.get_scale() == 65536.0
    assert Precision("16-mixed").grad_scaler("cpu") is not scaler  # one per optimiser


def test_precision_is_a_frozen_record_of_known_names():
    assert Precision() == Precision("32") and Precision("bf16-mixed") == Precision("bf16-mixed")
    assert PRECISIONS == ("32", "bf16-mixed", "16-mixed")
    with pytest.raises(AttributeError):
        Precision("32").name = "16-mixed"
    for bad in ("fp16", "bf16", 32, None):
        with pytest.raises(InputError) as exc:
            Precision(bad)
        assert str(exc.value) == f"precision must be one of '32', 'bf16-mixed', '16-mixed', got {bad!r}"


def test_trainer_config_precision_is_validated():
    assert TrainerConfig().precision == "32"
    assert TrainerConfig(precision="bf16-mixed").precision == "bf16-mixed"
    with pytest.raises(SettingError) as exc:
        TrainerConfig(precision="bf16")
    assert str(exc.value) == "TrainerConfig.precision must be one of 32, bf16-mixed, 16-mixed, got 'bf16'"
    with pytest.raises(SettingError):
        TrainerConfig(precision=32)


def test_autocast_off_leaves_autocast_inside_a_region():
    lin = nn.Linear(4, 4)
    with Precision("bf16-mixed").autocast("cpu"):
        with autocast_off("cpu"):
            assert lin(torch.randn(2, 4)).dtype == torch.float32
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    assert isinstance(autocast_off("meta"), contextlib.nullcontext)  # no autocast on that device type


def _pair(module: nn.Module, plain: nn.Module) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(0.5, 1.5)
    plain.load_state_dict(module.state_dict())
    return module, plain


@pytest.mark.parametrize("kind", ["layer", "group"])
def test_float32_norms_in_float32_are_the_plain_modules(kind):
    norm, plain = _pair(*((Float32LayerNorm(8, eps=1e-12), nn.LayerNorm(8, eps=1e-12)) if kind == "layer"
                          else (Float32GroupNorm(2, 8, eps=1e-6), nn.GroupNorm(2, 8, eps=1e-6))))
    assert list(norm.state_dict()) == list(plain.state_dict())
    x = (torch.randn(2, 8, 3, 8) if kind == "group" else torch.randn(2, 3, 8)).requires_grad_(True)
    out, ref = norm(x), plain(x)
    assert torch.equal(out, ref)
    (g1,) = torch.autograd.grad(out.square().sum(), x)
    (g2,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("kind", ["layer", "group"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_norms_under_cpu_autocast_normalise_in_float32(kind, dtype):
    """CPU autocast leaves layer_norm/group_norm in the input's dtype; these run them in float32."""
    norm, plain = _pair(*((Float32LayerNorm(8, eps=1e-12), nn.LayerNorm(8, eps=1e-12)) if kind == "layer"
                          else (Float32GroupNorm(2, 8, eps=1e-6), nn.GroupNorm(2, 8, eps=1e-6))))
    x = (torch.randn(2, 8, 3, 8) if kind == "group" else torch.randn(2, 3, 8)).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        out, low = norm(x), plain(x)
    assert low.dtype == dtype  # what the plain module gives under CPU autocast
    assert out.dtype == torch.float32
    assert torch.equal(out, plain(x.float()))  # exactly the float32 norm of the same input


def test_models_use_the_float32_norms():
    model = MaskedTransformer.from_preset("tiny", codebook_size=16, num_classes=0, prompts=["fp"], num_tokens=8)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(isinstance(m, Float32LayerNorm) for m in norms)
    assert isinstance(group_norm(8, 2), Float32GroupNorm)
    with torch.no_grad(), Precision("bf16-mixed").autocast("cpu"):
        logits = model(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                       torch.full((2,), model.vocab.uncond_id))
    assert logits.shape == (2, 8, 16) and logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("kind", ["layer", "group"])
def test_float32_norms_keep_float64(kind):
    norm, plain = _pair(*((Float32LayerNorm(8), nn.LayerNorm(8)) if kind == "layer"
                          else (Float32GroupNorm(2, 8), nn.GroupNorm(2, 8))))
    norm.double(), plain.double()
    x = (torch.randn(2, 8, 3, 8) if kind == "group" else torch.randn(2, 3, 8)).double()
    assert norm(x).dtype == torch.float64 and torch.equal(norm(x), plain(x))
