"""Granite (IBM): Llama's module names and layout; its scalar multipliers (embedding, attention, residual, logits)
sit inside modules or on the sublayer output after the adapter's site, so Llama's sites hold as they are."""

from dataclasses import replace

from .llama import LLAMA
from .registry import register_interface

GRANITE = register_interface(replace(LLAMA, model_types=("granite",), adapterhub={}, adapterhub_differs={}))
