"""The PEFT format's LoKr (peft_type "LOKR"): the same factors under the same names, `dW = (alpha / r) W1 (x) W2`,
as ours. Which factors are low-rank follows from r and the shapes, so the reader checks that the file's factors are
the ones this config builds (else the shapes would disagree). Conv layers' `lokr_t2` has no projection form here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...configs.module_targets import checkpoint_key
from ...configs.weight_update import fields_from_peft, peft_export_refusal, peft_fields
from .config import LoKrConfig

FACTORS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
PARAMS = {name: name for name in FACTORS}


def read(source: Path, data: Mapping[str, Any], sites: dict, targets: dict):
    fields = dict(fields_from_peft(source, data, targets),
                  decompose_both=data.get("decompose_both", False),
                  decompose_factor=data.get("decompose_factor", -1),
                  rank_dropout_scale=data.get("rank_dropout_scale", False))
    tensors = {checkpoint_key(i, loc, p): t for (i, loc), params in sites.items() for p, t in params.items()}
    return LoKrConfig, fields, tensors


READERS = {"LOKR": read}

export_refusal = peft_export_refusal


def output_vector(module):
    return None


def module_tensors(module) -> tuple[dict, bool]:
    return {name: p.detach() for name, p in module.named_parameters() if name in PARAMS}, False


def peft_config(config: LoKrConfig, common: dict, feedforward) -> dict:
    return {**peft_fields(config, "LOKR", common), "decompose_both": config.decompose_both,
            "decompose_factor": config.decompose_factor, "rank_dropout_scale": config.rank_dropout_scale}
