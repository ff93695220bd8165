"""magvit: MAGVIT, the Masked Generative Video Transformer (Yu et al., CVPR 2023), in PyTorch.

One bidirectional transformer over 3D-VQ video tokens does ten conditional video tasks; tasks,
tokenizers and mask schedules are plugins (see :mod:`magvit.registry`).
"""

from magvit.errors import MagvitError
from magvit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["MagvitError", "__version__", "hookimpl"]
