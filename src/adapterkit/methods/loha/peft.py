"""The PEFT format's LoHa (peft_type "LOHA"): the same factors under the same names, `dW = (alpha / r) (W1a W1b) *
(W2a W2b)`, as ours. Conv layers' `hada_t1` / `hada_t2` (peft's effective Conv2d) have no projection form here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...configs.module_targets import checkpoint_key
from ...configs.weight_update import fields_from_peft, peft_export_refusal, peft_fields
from .config import LoHaConfig

FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
PARAMS = {name: name for name in FACTORS}


def read(source: Path, data: Mapping[str, Any], sites: dict, targets: dict):
    fields = fields_from_peft(source, data, targets)
    tensors = {checkpoint_key(i, loc, p): t for (i, loc), params in sites.items() for p, t in params.items()}
    return LoHaConfig, fields, tensors


READERS = {"LOHA": read}

export_refusal = peft_export_refusal


def output_vector(module):
    return None


def module_tensors(module) -> tuple[dict, bool]:
    return {name: getattr(module, name).detach() for name in FACTORS}, False


def peft_config(config: LoHaConfig, common: dict, feedforward) -> dict:
    return peft_fields(config, "LOHA", common)
