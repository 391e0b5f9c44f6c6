"""peft's `target_modules` / `exclude_modules`: which of a model's modules an adapter of the LoRA family adapts,
by module name instead of by interface location, so it works on any model (with or without a ModelInterface).

The rule is peft's (`check_target_module_exists`), so a PEFT config selects the same modules here:
- a list entry matches a module named it or ending in "." + it;
- a string is a regular expression that must match the whole name (`re.fullmatch`);
- "all-linear" (any case) is every nn.Linear and transformers' Conv1D except the model's output embeddings (the LM
  head, `get_output_embeddings()`);
- `exclude_modules` (a list or a regex, the same rule) removes modules from the selection.
(IA)^3's `feedforward_modules` (the modules whose *input* it scales) follow peft's own looser rule: a list entry
matches a name ending in it (no "." needed), a string must match the whole name.

Module names are those of `model.named_modules()`; adapterkit's own container (`adapterkit.*`) is never a target.
An adapter selected this way keeps its modules at model level (`shared.<key>`, `target_key`).
"""

from __future__ import annotations

import re
from typing import Iterator

import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ..errors import AdapterConfigError, AdapterError

ALL_LINEAR = "all-linear"
CONTAINER_PREFIX = "adapterkit."
KEY_PREFIX = "m-"  # shared keys of module-targeted adapters: "m-" + the module name with "." -> "-"


def check_names_field(owner: str, field_name: str, value, *, allow_all_linear: bool = False):
    """None, a non-empty regex string or a list of non-empty names; returned normalised (a list, not a tuple)."""
    if value is None:
        return None
    if isinstance(value, str):
        if allow_all_linear and value.lower() == ALL_LINEAR:
            return value
        if not value:
            raise AdapterConfigError(f"{owner}.{field_name} must not be empty; give module names, a regex or "
                                     + ("'all-linear'" if allow_all_linear else "None"))
        try:
            re.compile(value)
        except re.error as e:
            raise AdapterConfigError(f"{owner}.{field_name}={value!r} is not a valid regular expression ({e})") \
                from None
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and value and all(isinstance(v, str) and v for v in value):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise AdapterConfigError(f"{owner}.{field_name}={value!r} must be a non-empty list of module names, a regular "
                             "expression string" + (", or 'all-linear'" if allow_all_linear else "") + " (or None)")


def _listed(names, key: str) -> bool:
    return key in names or any(key.endswith("." + n) for n in names)


def _excluded(exclude, key: str) -> bool:
    if not exclude:
        return False
    return bool(re.fullmatch(exclude, key)) if isinstance(exclude, str) else _listed(exclude, key)


def is_feedforward(feedforward, key: str) -> bool:
    """peft's (IA)^3 rule for `feedforward_modules`."""
    if not feedforward:
        return False
    if isinstance(feedforward, str):
        return bool(re.fullmatch(feedforward, key))
    return any(key.endswith(n) for n in feedforward)


def named_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The model's own named modules (not the root, not adapterkit's container)."""
    for name, module in model.named_modules():
        if name and name != CONTAINER_PREFIX[:-1] and not name.startswith(CONTAINER_PREFIX):
            yield name, module


def _all_linear(model: nn.Module) -> set[str]:
    names = {n for n, m in named_modules(model) if isinstance(m, (nn.Linear, Conv1D))}
    get_output = getattr(model, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    if isinstance(head, nn.Module):
        names -= {n for n, m in named_modules(model) if m is head}
    return names


def select(model: nn.Module, target_modules, exclude_modules=None) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module `target_modules` selects, in the model's module order; an AdapterError if
    none."""
    modules = list(named_modules(model))
    if isinstance(target_modules, str) and target_modules.lower() == ALL_LINEAR:
        linear = _all_linear(model)
        found = [(n, m) for n, m in modules if n in linear and not _excluded(exclude_modules, n)]
    elif isinstance(target_modules, str):
        found = [(n, m) for n, m in modules
                 if re.fullmatch(target_modules, n) and not _excluded(exclude_modules, n)]
    else:
        found = [(n, m) for n, m in modules if _listed(target_modules, n) and not _excluded(exclude_modules, n)]
    if not found:
        raise AdapterError(f"target_modules={target_modules!r}"
                           + (f" (exclude_modules={exclude_modules!r})" if exclude_modules else "")
                           + f" selects no module of {type(model).__name__}; names look like: "
                           + ", ".join(n for n, _ in modules[:8]))
    return found


def target_key(module_name: str) -> str:
    """The shared key under which an adapter keeps its module for the model module `module_name`."""
    return KEY_PREFIX + module_name.replace(".", "-")


def is_target_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX)


def checkpoint_key(scope, location: str, param: str) -> str:
    """The key of one tensor in an adapter's container entry: per layer (`layers.<i>.<location>.<param>`) or, for
    a module-targeted adapter (scope "model"), `shared.<key>.<param>`."""
    if scope == "model":
        return f"shared.{location}.{param}"
    return f"layers.{scope}.{location}.{param}"


def check_module_targets(config) -> bool:
    """Validate a config's `target_modules` / `exclude_modules` (and `feedforward_modules`, if it has the field);
    True if it selects modules by name (then the location fields are not used)."""
    owner = type(config).__name__
    config.target_modules = check_names_field(owner, "target_modules", config.target_modules, allow_all_linear=True)
    config.exclude_modules = check_names_field(owner, "exclude_modules", config.exclude_modules)
    has_feedforward = hasattr(config, "feedforward_modules")
    if has_feedforward:
        config.feedforward_modules = check_names_field(owner, "feedforward_modules", config.feedforward_modules)
    if config.target_modules is None:
        extra = [f for f in ("exclude_modules", "feedforward_modules") if getattr(config, f, None)]
        if extra:
            raise AdapterConfigError(f"{owner}: {', '.join(extra)} only apply with target_modules; set "
                                     "target_modules or leave them out")
        return False
    if config.leave_out:
        raise AdapterConfigError(f"{owner}: leave_out (layer indices) applies to the location-based targets; with "
                                 "target_modules, select modules by name (or use exclude_modules)")
    if getattr(config, "use_gating", False):
        raise AdapterConfigError(f"{owner}: use_gating has no form on modules selected by target_modules (its gate "
                                 "scores are per layer and location); use the location-based targets")
    if getattr(config, "scale_inputs", None):
        raise AdapterConfigError(f"{owner}: scale_inputs applies to the location-based targets; with target_modules "
                                 "name the modules whose input (IA)^3 scales in feedforward_modules (as peft)")
    if has_feedforward and config.feedforward_modules and getattr(config, "composition_mode", "scale") != "scale":
        raise AdapterConfigError(f"{owner}: feedforward_modules is for (IA)^3 (composition_mode='scale')")
    return True
