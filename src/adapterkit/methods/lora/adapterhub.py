"""AdapterHub names of LoRA / (IA)^3 weights: `<layer>.<projection>.loras.<name>.lora_A` (ours:
`layers.<i>.<location>.lora_A`); (IA)^3 keeps only `lora_B`, shaped (out, 1). A fused projection (GPT-2's
c_attn) holds one tensor for all its parts: split on import, concatenated on export (io/adapterhub.py). DoRA's
magnitude is the package's `m.weight`, shaped (out, 1) (ours: `magnitude.weight`, (out,))."""

from __future__ import annotations

import warnings
from typing import Any

from ...configs.module_targets import target_key
from ...errors import AdapterConfigError
from ...interfaces.base import FusedSlice
from .config import LoRAConfig
from .init import changes_base

LAYER_KIND = "loras"
MAGNITUDE, MAGNITUDE_HUB = "magnitude.weight", "m.weight"  # DoRA's: ours, the package's
VERA_REFUSAL = (
    "VeRA / DvoRA adapters have no exact AdapterHub form: the `adapters` package leaves the frozen random A and B "
    "out of its files (so its own reloads change outputs) and keeps d and b as full square matrices; save and load "
    "them in the adapterkit or PEFT format")


def config_to_hub(config, out: dict[str, Any]) -> None:
    """The `adapters` package's LoRA scales by alpha / r: rsLoRA's alpha / sqrt(r) is written as that alpha; peft's
    inits, which the package would refuse, as its default (the file holds the trained weights)."""
    if config.is_vera:
        raise AdapterConfigError(VERA_REFUSAL)
    if "o" in config.attn_matrices:
        raise AdapterConfigError(
            "AdapterHub LoRA cannot target the attention output projection ('o' in attn_matrices; the `adapters` "
            "package silently ignores it); save in adapterkit or PEFT format instead"
        )
    if config.scale_inputs:
        raise AdapterConfigError(
            f"(IA)^3 with scale_inputs={config.scale_inputs} (inputs scaled, as peft's feedforward_modules) has no "
            "AdapterHub form (the `adapters` package scales outputs only); save in adapterkit or PEFT format")
    if changes_base(config.init_weights):
        raise AdapterConfigError(
            f"LoRA init_weights={config.init_weights!r} changed the base weights (W - s B A), which the `adapters` "
            "package would not redo on load; call model.convert_to_plain_lora(name) first (the equal plain LoRA of "
            "rank 2r on the original weights), or save in adapterkit or PEFT format")
    for key in ("target_modules", "exclude_modules", "feedforward_modules"):  # None: io refuses module targets
        out.pop(key, None)
    if out.pop("rank_pattern", None) or out.pop("alpha_pattern", None):
        raise AdapterConfigError("AdapterHub LoRA has one r and alpha per adapter; an adapter with rank_pattern / "
                                 "alpha_pattern saves in adapterkit or PEFT format")
    if out.pop("dora_semantics", "adapters") != "adapters" and config.use_dora:
        raise AdapterConfigError(
            "a DoRA adapter with dora_semantics='peft' (peft's DoRA: bias not scaled, norm of W + (alpha/r) B A) "
            "computes another function than the `adapters` package's DoRA; save it in the PEFT or adapterkit "
            "format")
    if out.pop("use_rslora", False):
        out["alpha"] = config.scaling * config.r
    if out.get("init_weights") in ("gaussian", "orthogonal"):
        out["init_weights"] = "lora"  # the package knows no such init; the weights in the file are what counts


def fix_legacy_dict(source, data: dict[str, Any], version: str) -> dict[str, Any]:
    """adapters < 1.1.0 applied LoRA with scaling 1 whatever alpha said (adapters PR #770): load it as it ran."""
    if not version.startswith("adapters.") or data.get("r") == data.get("alpha"):
        return data
    parts = version[len("adapters."):].split(".")
    if [int(p) if p.isdigit() else 0 for p in parts[:2]] < [1, 1]:
        r = data.get("r", LoRAConfig.r)
        warnings.warn(f"{source}: LoRA saved by {version} ran with alpha == r; loading it with alpha={r!r}",
                      stacklevel=5)
        data["alpha"] = r
    return data


def owns(location: str, interface) -> bool:
    return location in dict(interface.all_linear_locations())


def enabled_locations(config, interface) -> list[str]:
    return [loc for loc, _ in interface.linear_locations(
        attn_matrices=config.attn_matrices if config.selfattn_lora else (),
        intermediate=config.intermediate_lora, output=config.output_lora)]


def prepare_import(config, interface, present_here, name: str) -> dict:
    """Checked once per import: the enabled locations, and none whose AdapterHub namesake is another module."""
    if config.is_vera:
        raise AdapterConfigError(VERA_REFUSAL)
    enabled = enabled_locations(config, interface)
    differs = [loc for loc in enabled if loc in interface.adapterhub_differs
               and (present_here is None or loc in present_here)]
    if differs:
        groups = sorted({loc.split("_")[0] for loc in differs})
        raise AdapterConfigError(
            f"AdapterHub adapter {name!r} has {' and '.join(groups)} LoRA / (IA)^3 on other projections than "
            "adapterkit's in this architecture: "
            + "; ".join(interface.adapterhub_differs[loc] for loc in differs) + "; no exact conversion exists")
    return {"enabled": enabled}


def import_layer(key: str, layer_id: int, path: str, locations: list[str], rest: str, tensor, config, interface,
                 ctx) -> dict:
    parts = [loc for loc in ctx["enabled"] if loc in locations]  # a fused projection holds several, in order
    if not parts:
        raise AdapterConfigError(f"AdapterHub weight {key!r}: the config enables no projection at {path!r}")
    check_contiguous(interface, parts[0], f"AdapterHub weight {key!r}")
    out = {}
    if rest.startswith("gate."):
        # a gated LoRA's gate reads the projection's input. On a fused projection the package keeps one gate with
        # one head per part (q, k, v order): each part's gate is its row; a single-head gate serves every part.
        rows = tensor.chunk(len(parts), dim=0) if len(parts) > 1 and tensor.shape[0] == len(parts) \
            else [tensor] * len(parts)
        for location, row in zip(parts, rows):
            out[f"layers.{layer_id}.{location}.{rest}"] = row.contiguous()
        return out
    scale = config.composition_mode == "scale"  # (IA)^3 keeps only lora_B, shaped (out, 1)
    if scale and rest != "lora_B":
        raise AdapterConfigError(f"unexpected (IA)^3 weight {key!r}")
    for location, chunk in zip(parts, tensor.chunk(len(parts), dim=0)):
        if rest == MAGNITUDE_HUB:
            out[f"layers.{layer_id}.{location}.{MAGNITUDE}"] = chunk.reshape(-1)
        elif scale:
            out[f"layers.{layer_id}.{location}.ia3_l"] = chunk.reshape(-1)
        else:
            out[f"layers.{layer_id}.{location}.{rest}"] = chunk.contiguous()
    return out


def export_layer(prefix: str, path: str, location: str, param: str, tensor, name: str, config, interface):
    """(AdapterHub key, tensor, order among a fused projection's parts)."""
    if location in interface.adapterhub_differs:
        raise AdapterConfigError(
            f"adapter {name!r}: its {location!r} projections have an AdapterHub namesake on another module in "
            f"this architecture ({interface.adapterhub_differs[location]}), so the export would not load as "
            "the same adapter; leave them out (intermediate_lora / output_lora=False) or save in the adapterkit "
            "format")
    check_contiguous(interface, location, f"adapter {name!r}")
    order = [loc for loc, _ in interface.all_linear_locations()].index(location)
    if param == MAGNITUDE:
        return f"{prefix}{path}.{LAYER_KIND}.{name}.{MAGNITUDE_HUB}", tensor.reshape(-1, 1), order
    if param == "ia3_l":
        return f"{prefix}{path}.{LAYER_KIND}.{name}.lora_B", tensor.reshape(-1, 1), order
    return f"{prefix}{path}.{LAYER_KIND}.{name}.{param}", tensor, order


def check_contiguous(interface, location: str, what: str) -> None:
    """AdapterHub splits a fused projection into contiguous blocks; a per-head split (adapterkit's DeBERTa) puts
    other rows in each part, so no conversion keeps the adapter's function."""
    spec = dict(interface.all_linear_locations()).get(location)
    if isinstance(spec, FusedSlice) and spec.per_head:
        raise AdapterConfigError(
            f"{what}: {location!r} is a per-head slice of the fused projection {spec.module!r} here, and AdapterHub "
            f"splits it into {spec.parts} contiguous blocks instead (other rows, so another function); use the "
            "interface with that layout (DeBERTa: adapterkit.interfaces.deberta.DEBERTA_ADAPTERHUB_QKV) or the "
            "adapterkit format")


def shared_import(name: str, interface) -> list:
    return []  # no model-level modules


def shared_export(interface) -> dict[str, str]:
    return {}


def relocate(config, weights, state, name: str):
    """An AdapterHub LoRA / (IA)^3 whose FFN projections sit elsewhere in the `adapters` package than in adapterkit
    here (Llama's "intermediate" on down_proj, gated T5's on wi_1 alone): the same adapter on the package's modules,
    as a module-targeted one (`target_modules` = the exact module names, so its config records the placement), with
    the file's tensors under those modules' keys. (config, tensors), or None where the placements agree.

    Gated LoRA and `scale_inputs` have no module-targeted form: such checkpoints keep the refusal."""
    interface = state.interface
    if not any(loc in interface.adapterhub_differs for loc in enabled_locations(config, interface)):
        return None
    if config.use_gating or config.is_vera:
        return None  # prepare_import refuses, naming why
    modules = dict(state.model.named_modules())
    suffix = f".{LAYER_KIND}.{name}."
    tensors, targets = {}, set()
    for key, tensor in weights.items():
        if suffix not in key:
            raise AdapterConfigError(f"AdapterHub weight {key!r} is not a LoRA / (IA)^3 weight of adapter {name!r}")
        path, param = key.split(suffix, 1)
        found = [n for n in modules if n == path or n.endswith("." + path) or path.endswith("." + n)]
        if len(found) != 1:
            raise AdapterConfigError(f"AdapterHub weight {key!r}: no single module {path!r} in this model")
        module_name = found[0]
        targets.add(module_name)
        ours = f"shared.{target_key(module_name)}"
        if param == MAGNITUDE_HUB:
            tensors[f"{ours}.{MAGNITUDE}"] = tensor.reshape(-1)
        elif config.composition_mode == "scale":
            if param != "lora_B":
                raise AdapterConfigError(f"unexpected (IA)^3 weight {key!r}")
            tensors[f"{ours}.ia3_l"] = tensor.reshape(-1)
        else:
            tensors[f"{ours}.{param}"] = tensor
    relocated = config.replace(target_modules=sorted(targets), leave_out=[])
    return relocated, tensors
