"""The PEFT format's LoRA and (IA)^3, as this method reads and writes them (io/peft.py does the directory, the
module names and the targets). Semantics are checked, not assumed:

- LoRA: `W x + (lora_alpha / r) B A x`, as ours; `use_rslora` (`lora_alpha / sqrt(r)`) as ours, both ways;
  `rank_pattern` / `alpha_pattern` verbatim (the same matching rule, configs/patterns.py); `init_lora_weights`
  "pissa" / "pissa_niter_<N>" / "olora" kept, since peft redoes them on load (the base becomes the residual).
- DoRA (`use_dora`): peft's semantics (nn/dora.py), ours with `dora_semantics="peft"`, both ways; its magnitude
  `lora_magnitude_vector` (out,) is our `magnitude.weight`. The `adapters` package's DoRA (the default
  semantics) computes another function (its bias scaled, its norm unscaled) and is refused on export.
- (IA)^3 on a non-feedforward module: `l * (W x + b)` (peft scales the output, bias included), as ours. On a
  `feedforward_modules` entry peft scales the *input*, `W (l * x) + b`: adapterkit's `scale_inputs` (per kind of
  projection: "o", "output", ...), both ways; a kind scaled at the input in some modules and at the output in
  others has no adapterkit form and is refused.
- VeRA: vera_peft.py (its frozen pair is a model-level tensor: `MODEL_LEVEL`, `complete_read`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...configs.module_targets import checkpoint_key
from ...errors import AdapterConfigError, CheckpointError
from .config import INPUT_SCALABLE, IA3Config, LoRAConfig, location_group
from .init import changes_base
from .experts import ExpertIA3
from .modules import IA3, IA3Input
from .vera import Vera
from . import vera_peft
from .vera_peft import MODEL_LEVEL, complete_read, model_level_tensors  # noqa: F401 (the map's interface)

# PEFT parameter suffix -> ours
PARAMS = {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B", "ia3_l": "ia3_l",
          "lora_magnitude_vector": "magnitude.weight", "lora_embedding_A": "lora_embedding_A",
          "lora_embedding_B": "lora_embedding_B", **vera_peft.PARAMS}
# LoRA options that change the computation in ways adapterkit does not implement ("off" values)
_LORA_UNSUPPORTED = {"lora_bias": False, "use_qalora": False, "layer_replication": None,
                     "trainable_token_indices": None, "alora_invocation_tokens": None}


def read_lora(source: Path, data: Mapping[str, Any], sites: dict, targets: dict):
    """(config class, fields, tensors) of a PEFT LoRA; `targets`: the config fields selecting the sites."""
    for key, off in _LORA_UNSUPPORTED.items():
        if data.get(key, off) not in (off, None, [], {}):
            raise CheckpointError(f"{source}: PEFT LoRA option {key}={data[key]!r} is not supported by adapterkit")
    if data.get("bias", "none") != "none":
        raise CheckpointError(f"{source}: PEFT bias={data['bias']!r} (trained base-model biases) is not supported; "
                              "allowed: 'none'")
    r, alpha = data.get("r"), data.get("lora_alpha")
    patterns = {}
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = data.get(key) or {}
        if not isinstance(pattern, Mapping):
            raise CheckpointError(f"{source}: PEFT {key}={pattern!r} must be an object (or null)")
        patterns[key] = dict(pattern)
    for key in ("use_rslora", "use_dora"):
        if not isinstance(data.get(key, False), bool):
            raise CheckpointError(f"{source}: PEFT {key}={data[key]!r} must be true or false")
    fields = dict(targets, r=r, alpha=alpha, dropout=data.get("lora_dropout", 0.0),
                  use_rslora=data.get("use_rslora", False), init_weights=_init_from_peft(source, data), **patterns)
    if data.get("use_dora", False):
        fields.update(use_dora=True, dora_semantics="peft")
    tensors = {checkpoint_key(i, loc, p): t for (i, loc), params in sites.items() for p, t in params.items()}
    return LoRAConfig, fields, tensors


def read_ia3(source: Path, data: Mapping[str, Any], sites: dict, targets: dict):
    """PEFT (IA)^3: a vector shaped (out, 1) scales a module's output; one shaped (1, in) (a `feedforward_modules`
    entry) scales its input, which adapterkit's `scale_inputs` does for a whole group of projections."""
    tensors, scaled_input, scaled_output = {}, set(), set()
    for (i, loc), params in sorted(sites.items()):
        for p, t in params.items():
            if p == "ia3_l":
                feedforward = t.dim() == 2 and t.shape[0] == 1 and t.shape[1] != 1
                (scaled_input if feedforward else scaled_output).add(location_group(loc))
                t = t.reshape(-1)
            tensors[checkpoint_key(i, loc, p)] = t
    if "target_modules" in targets:  # module-targeted: peft's feedforward_modules say whose input is scaled
        return IA3Config, dict(targets), tensors
    mixed = scaled_input & scaled_output
    if mixed:
        raise CheckpointError(
            f"{source}: PEFT (IA)^3 scales the input of some {', '.join(sorted(mixed))} projections and the output of "
            f"others (feedforward_modules={data.get('feedforward_modules')!r}); adapterkit's scale_inputs chooses "
            "per kind of projection (q, k, v, o, intermediate, output), so there is no exact conversion")
    fields = dict(targets, scale_inputs=[m for m in INPUT_SCALABLE if m in scaled_input])
    return IA3Config, fields, tensors


READERS = {"LORA": read_lora, "IA3": read_ia3, "VERA": vera_peft.read}
# peft's init_lora_weights whose only effect on a loaded adapter is none (its weights are the file's)
_PLAIN_INITS = {True: "lora", False: "lora", "gaussian": "lora", "orthogonal": "lora", "eva": "lora"}


def _init_from_peft(source: Path, data: Mapping[str, Any]) -> str:
    """peft re-runs a base-changing init when it loads an adapter (PiSSA / OLoRA: the base becomes the residual of
    the *loaded-into* model's weight, then the file's A and B are loaded), so adapterkit does the same; the other
    inits are overwritten by the file."""
    value = data.get("init_lora_weights", True)
    if isinstance(value, (bool, str)) and value in _PLAIN_INITS:
        return _PLAIN_INITS[value]
    if isinstance(value, str) and (value in ("pissa", "olora") or value.startswith("pissa_niter_")):
        return value
    raise CheckpointError(f"{source}: PEFT init_lora_weights={value!r} is not supported by adapterkit (peft redoes "
                          "it on load); allowed: true, false, 'gaussian', 'orthogonal', 'eva', 'pissa', "
                          "'pissa_niter_<N>', 'olora'")


def output_vector(module):
    """An (IA)^3 output-scaling vector with alpha folded in (peft's IA3 has none), or None for other modules."""
    return module.vector().detach() if isinstance(module, IA3) else None


def module_tensors(module) -> tuple[dict, bool]:
    """({PEFT parameter suffix: tensor}, whether PEFT lists the module as feedforward) of one projection's module."""
    if hasattr(module, "peft_tensors"):  # on an embedding or convolution (kernel_modules.py)
        return module.peft_tensors(), bool(getattr(module, "feedforward", False))
    if isinstance(module, IA3):
        return {"ia3_l": module.vector().detach().reshape(-1, 1)}, False
    if isinstance(module, IA3Input):  # a peft feedforward module: its input scaled, (1, in)
        return {"ia3_l": module.vector().detach().reshape(1, -1)}, True
    if isinstance(module, Vera):
        return vera_peft.module_tensors(module), False
    if isinstance(module, ExpertIA3):
        raise AdapterConfigError("(IA)^3 on a fused mixture-of-experts weight has no PEFT form (peft's "
                                 "`target_parameters` is for LoRA); save it as format='adapterkit'")
    params = {"lora_A.weight": module.lora_A.detach(), "lora_B.weight": module.lora_B.detach()}
    magnitude = getattr(module, "magnitude", None)
    if magnitude is not None:
        if magnitude.semantics != "peft":
            raise AdapterConfigError(
                "a DoRA adapter with dora_semantics='adapters' (the `adapters` package's DoRA: bias scaled, norm of "
                "W + B A without alpha/r) computes another function than peft's DoRA; save it in the AdapterHub or "
                "adapterkit format, or use dora_semantics='peft' for PEFT")
        params["lora_magnitude_vector"] = magnitude.weight.detach()
    return params, False


def peft_config(config: LoRAConfig, common: dict, feedforward) -> dict:
    """The PEFT adapter_config.json of `config`; `feedforward`: the `feedforward_modules` value ((IA)^3)."""
    if config.is_vera:
        return vera_peft.peft_config(config, common)
    if config.composition_mode == "scale":
        return {"peft_type": "IA3", "feedforward_modules": feedforward, "init_ia3_weights": True, **common}
    init = config.init_weights if changes_base(config.init_weights) else True  # peft redoes PiSSA / OLoRA on load
    return {"peft_type": "LORA", "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
            "bias": "none", "use_rslora": config.use_rslora, "use_dora": config.use_dora, "init_lora_weights": init,
            "layers_to_transform": None, "layers_pattern": None, "rank_pattern": dict(config.rank_pattern),
            "alpha_pattern": dict(config.alpha_pattern), **common}
