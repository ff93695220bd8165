"""A transparent wrapper around a real model that records every forward call (inputs and logits)."""

from __future__ import annotations

import torch


class RecordingModel(torch.nn.Module):
    """Delegates to ``model`` (attributes included) and appends each call's arguments and logits to ``calls``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[dict] = []

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    def forward(self, inputs, prompt, label, prefix=None, prefix_index=None):
        logits = self.model(inputs, prompt, label, prefix, prefix_index)
        self.calls.append({"inputs": inputs.clone(), "prompt": None if prompt is None else prompt.clone(),
                           "label": label.clone(), "prefix": prefix, "prefix_index": prefix_index,
                           "logits": logits})
        return logits
