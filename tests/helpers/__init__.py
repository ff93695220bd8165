"""Shared test helpers: a small, real, deterministic tokenizer, synthetic clips, a recording model wrapper."""

from tests.helpers.palette_tokenizer import PaletteTokenizer, moving_square_clip
from tests.helpers.spy import RecordingModel

__all__ = ["PaletteTokenizer", "RecordingModel", "moving_square_clip"]
