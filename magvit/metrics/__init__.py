"""Evaluation metrics: FVD with the project's own I3D, PSNR / SSIM for videos, and masked PSNR.

FVD follows MAGVIT's protocol (the authors' ``videogvt/train_lib/frechet_distance.py``); the Kinetics-400
I3D weights come from :func:`fetch_i3d` (``magvit weights i3d``) and are loaded from a local safetensors
file only.
"""

from magvit.metrics.fvd import FrechetVideoDistance, FVDResult, Preprocessing, frechet_distance
from magvit.metrics.i3d import I3D
from magvit.metrics.quality import MaskedPSNR, VideoPSNR, VideoSSIM
from magvit.metrics.weights import fetch_i3d

__all__ = [
    "I3D",
    "FVDResult",
    "FrechetVideoDistance",
    "MaskedPSNR",
    "Preprocessing",
    "VideoPSNR",
    "VideoSSIM",
    "fetch_i3d",
    "frechet_distance",
]
