"""Activations by config name and BERT's initialisation, shared by adapters, prefix MLPs and heads."""

from __future__ import annotations

import torch.nn as nn
from transformers.activations import get_activation

# the config names `activation` accepts
NON_LINEARITIES = ("relu", "swish", "silu", "gelu", "gelu_new", "gelu_fast", "quick_gelu", "tanh", "sigmoid",
                   "leakyrelu", "linear", "mish")


def activation(name: str) -> nn.Module:
    """An activation module by its config name (transformers' names, plus "leakyrelu" and "linear")."""
    if name == "leakyrelu":
        return nn.LeakyReLU()
    if name == "linear":
        return nn.Identity()
    return get_activation(name)


def init_bert(module: nn.Module) -> None:
    """N(0, 0.02) weights, zero biases, unit layer norms (BERT's initialisation)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
