"""PEFT's `target_parameters` LoRA on fused mixture-of-experts weights (its `ParamWrapper`), read and written as
adapterkit's per-expert LoRA (lora_A [E, r, in], lora_B [E, out, r]: `W_e + s B_e A_e`).

PEFT's layout, as peft 0.18+ builds it: one wrapper per targeted parameter, nested on the experts module in the
module's own parameter order (the first targeted innermost), so a parameter's tensors sit under `.base_layer` once
per wrapper put over it later; its `lora_A.weight` is [E*r, in] with expert-major rows (A_e = rows e*r .. e*r+r-1)
and `lora_B.weight` [out, r*E] with expert-minor columns (column k*E + e of B is column k of B_e), in each
expert's (out, in) orientation whatever the storage. tests/test_moe.py checks it against peft's own outputs.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn as nn

from .peft_modules import PEFT_PREFIX

LORA_SUFFIXES = ("lora_A.weight", "lora_B.weight")


def _selected(key: str, targets) -> bool:
    """peft's rule: an entry matches the parameter's full name or its tail after a dot."""
    return key in targets or any(key.endswith("." + t) for t in targets)


def wrapped_names(model: nn.Module, targets) -> dict[str, tuple[str, nn.Module, str]]:
    """peft's module name of each targeted parameter's wrapper -> (experts module name, module, parameter)."""
    out = {}
    for module_name, module in model.named_modules():
        if module_name.startswith("adapterkit"):
            continue
        names = [n for n, p in module.named_parameters(recurse=False)
                 if p.dim() == 3 and _selected(f"{module_name}.{n}", targets)]
        for i, name in enumerate(names):
            out[module_name + ".base_layer" * (len(names) - 1 - i)] = (module_name, module, name)
    return out


def unnest(model: nn.Module, weights: Mapping[str, torch.Tensor], targets) -> dict[str, torch.Tensor]:
    """`weights` with each targeted experts parameter's LoRA renamed `<module>.<parameter>.lora_X.weight` and laid
    out as adapterkit's ([E, r, in], [E, out, r]); other keys as they are."""
    wrappers = wrapped_names(model, targets)
    pattern = re.compile(rf"^{re.escape(PEFT_PREFIX)}(.+)\.(lora_A|lora_B)\.weight$")
    out = {}
    for key, tensor in weights.items():
        m = pattern.match(key)
        found = wrappers.get(m.group(1)) if m else None
        if found is None:
            out[key] = tensor
            continue
        module_name, module, name = found
        experts = module._parameters[name].shape[0]
        if m.group(2) == "lora_A":  # [E*r, in] -> [E, r, in]
            tensor = tensor.reshape(experts, -1, tensor.shape[-1])
        else:  # [out, r*E] -> [E, out, r]
            tensor = tensor.reshape(tensor.shape[0], -1, experts).permute(2, 0, 1)
        out[f"{PEFT_PREFIX}{module_name}.{name}.{m.group(2)}.weight"] = tensor.contiguous()
    return out


def to_peft(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """adapterkit's per-expert (lora_A [E, r, in], lora_B [E, out, r]) in peft's layout."""
    a, b = params["lora_A.weight"], params["lora_B.weight"]
    experts, r, _ = a.shape
    return {"lora_A.weight": a.reshape(experts * r, -1).contiguous(),
            "lora_B.weight": b.permute(1, 2, 0).reshape(b.shape[1], r * experts).contiguous()}
