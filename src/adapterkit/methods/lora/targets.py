"""LoRA, DoRA, (IA)^3 and VeRA on the modules `target_modules` names (peft's selection, configs/module_targets.py),
on any model: with or without a ModelInterface.

Each selected module gets one module of the adapter at model level (`shared.<target_key(name)>`) and a projection
site of its own. What each module type takes (as peft; anything else is refused by name):
- nn.Linear, transformers' Conv1D, a quantized linear: every method, as on interface locations (modules.py, dora.py,
  vera.py); a `feedforward_modules` entry gets (IA)^3 on its input;
- nn.Embedding: LoRA (kernel_modules.py);
- nn.Conv1d / nn.Conv2d: LoRA; nn.Conv2d also (IA)^3.
"""

from __future__ import annotations

from ...configs.module_targets import is_feedforward, select, target_key
from ...configs.patterns import settle
from ...errors import AdapterError
from ...nn.module_target import KernelTarget, kind_of, target_for
from .config import LoRAConfig
from .dora import DoRA
from .dvora import DvoRA
from .init import changes_base, initialise
from .kernel_modules import IA3Conv, LoRAConv, LoRAEmbedding, check_conv
from .modules import IA3, IA3Input, LoRA
from .vera import SHARED_KEY, Vera, VeraShared, largest

SUPPORTED = "nn.Linear, transformers' Conv1D, nn.Embedding, nn.Conv1d and nn.Conv2d"


def _what(config: LoRAConfig) -> str:
    if config.composition_mode == "scale":
        return "(IA)^3"
    return ("DvoRA" if config.use_dora else "VeRA") if config.is_vera else "DoRA" if config.use_dora else "LoRA"


def selected(model, config) -> list[tuple[str, str, object]]:
    """(shared key, module name, merge target) of every module the config selects; an error for a module type
    the method cannot adapt."""
    out = []
    for module_name, module in select(model, config.target_modules, config.exclude_modules):
        if kind_of(module) is None:
            raise AdapterError(f"target_modules={config.target_modules!r} selects {module_name} "
                               f"({type(module).__name__}), which LoRA-type adapters cannot adapt; supported: "
                               f"{SUPPORTED} (narrow target_modules or add exclude_modules)")
        out.append((target_key(module_name), module_name, target_for(module)))
    return out


def _refuse(config: LoRAConfig, module_name: str, target, why: str) -> None:
    raise AdapterError(f"{_what(config)} on {module_name} ({type(target.module).__name__}): {why}; "
                       "narrow target_modules (or add exclude_modules)")


def _kernel_module(config: LoRAConfig, module_name: str, target: KernelTarget):
    if config.is_vera or config.use_dora:
        _refuse(config, module_name, target, "adapterkit has it on linear modules only (nn.Linear, Conv1D)")
    if changes_base(config.init_weights) or config.init_weights == "orthogonal":
        _refuse(config, module_name, target, f"init_weights={config.init_weights!r} is for linear modules")
    if target.kind != "embedding":
        check_conv(target, module_name)
    if config.composition_mode == "scale":
        if target.kind != "conv2d":
            _refuse(config, module_name, target, "peft's (IA)^3 takes nn.Linear, Conv1D and nn.Conv2d only, so "
                                                 "adapterkit's does too")
        return IA3Conv(target, config, is_feedforward(config.feedforward_modules, module_name))
    r, alpha = config.rank_for(module_name)
    return LoRAEmbedding(target, config, r, alpha) if target.kind == "embedding" else LoRAConv(target, config, r, alpha)


def _linear_module(config: LoRAConfig, module_name: str, target):
    if config.composition_mode == "scale":
        if is_feedforward(config.feedforward_modules, module_name):
            module = IA3Input(target.in_features, target.out_features, config)
            module.__dict__["projection"] = target
            return module
        return IA3(target.in_features, target.out_features, config)
    r, alpha = config.rank_for(module_name)
    if config.use_dora:
        module = DoRA(target.in_features, target.out_features, config, target, r, alpha)
    else:
        module = LoRA(target.in_features, target.out_features, config, r, alpha)
    if changes_base(config.init_weights):
        initialise(module, target, config.init_weights)  # writes W - s B A (registry.build records it)
        if config.use_dora:
            module.initialise_magnitude()
    return module


def build_targeted(state, name: str, config: LoRAConfig) -> None:
    found = selected(state.model, config)
    if config.is_vera:
        _build_vera(state, name, config, found)
        return
    adapted = []
    for key, module_name, target in found:
        if isinstance(target, KernelTarget):
            module = _kernel_module(config, module_name, target)
        else:
            module = _linear_module(config, module_name, target)
        adapted.append(module_name)
        state.add_model_module(name, key, module, site="linear", target=target)
    settle(state, name, config, adapted)


def _build_vera(state, name: str, config: LoRAConfig, found) -> None:
    for _, module_name, target in found:
        if isinstance(target, KernelTarget):
            _kernel_module(config, module_name, target)  # raises: VeRA is for linear modules
    in_max, out_max = largest(t for _, _, t in found)
    shared = state.add_model_module(name, SHARED_KEY, VeraShared(config.r, in_max, out_max))
    for key, _, target in found:
        if config.use_dora:
            module = DvoRA(target.in_features, target.out_features, config, shared, target)
        else:
            module = Vera(target.in_features, target.out_features, config, shared)
        state.add_model_module(name, key, module, site="linear", target=target)


def vera_size(model, config: LoRAConfig) -> tuple[int, int]:
    """(in_max, out_max) of a module-targeted VeRA's shared pair."""
    return largest(t for _, _, t in selected(model, config))
