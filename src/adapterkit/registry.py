"""The method registry: one `MethodSpec` per method, the only way generic code learns about a method.

A method lives in one folder (`adapterkit/methods/<name>/`) and registers itself with `register_method(spec)`.
Generic code (sites, compose, io, fusion, summary, averaging, state) asks the spec of an adapter's config — what
to build, whether it merges, which composition blocks it runs, its checkpoint maps — and never imports or names
a method's classes. A `ConfigUnion` is several methods under one adapter name: `members` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .blocks import AdapterCompositionBlock, Stack
from .configs.base import AdapterConfig
from .configs.registry import ADAPTER_CONFIG_MAP, register_config_class, register_config_name
from .configs.union import ConfigUnion
from .errors import AdapterError
from .interfaces.missing import refusal
from .merge_snapshot import MergeSnapshot, recording
from .nn.seeding import seeded_build

@dataclass(frozen=True)
class MethodSpec:
    """What a method tells generic code.

    - `name`: the configs' `method` ("bottleneck", "lora", ...); `label`: how errors and summaries call it.
    - `config`: the family's base config class (built by `AdapterConfig.from_dict` for that method);
      `config_names`: registered names -> default configs ("lora": LoRAConfig(), ...).
    - `build(state, name, config)`: create the adapter's modules and ask the state for the sites they need.
    - `merge(state, name, config)`: fold into the base weights, writing them through `Projection.set` (the
      generic merge copies the rows written and reset restores them bit for bit); None: cannot merge.
    - `reset(state, name, config)`: anything besides the weights to undo on reset (usually None).
    - `before_forward(state, names)`: once per forward, outside every layer (prefix MLPs); None: nothing.
    - `blocks`: the composition blocks it runs; none declared means none (a lone adapter is always allowed).
    - `fusable`: AdapterFusion can fuse its adapters.
    - `averaging`: extra `average_adapter` strategies, name -> a strategy object (`accepts` / `requires` options,
      `check`, `config`, `apply`: averaging.py; LoRA's in methods/lora/strategy.py).
    - `formats`: checkpoint format name -> the method's map for it (see io/).
    - `exports`: public name -> config class (`adapterkit.configs.<name>`, aliases included).
    - `site_entry(state, adapter_name, key)`: what a per-kind site (one per layer and kind, e.g. attention) runs
      for this adapter (default: the module registered there).
    - `api`: model API functions the method adds, name -> fn(state, adapter_name) (`eject_prefix_tuning`).
    - `shared_parameters`: the per-module parameters `model.share_parameters` may tie across adapters of this
      method (MTL-LoRA's `lora_A`, `lora_B`: what its tasks share); none: its adapters cannot share.
    - `hotswap`: what `model.hotswap_adapter` needs beyond copying same-shaped tensors (hotswap.py): an object with
      `free_fields`, `check_prepare` / `prepare(state, name, config, max_rank)` and `plan(state, name, old, new,
      tensors, source)`; None: only exact shapes and equal configs swap.
    """

    name: str
    label: str
    config: type
    build: Callable
    config_names: Mapping[str, AdapterConfig] = field(default_factory=dict)
    merge: Callable | None = None
    reset: Callable | None = None
    before_forward: Callable | None = None
    blocks: tuple = ()
    fusable: bool = False
    averaging: Mapping[str, Callable] = field(default_factory=dict)
    formats: Mapping[str, Any] = field(default_factory=dict)
    exports: Mapping[str, type] = field(default_factory=dict)
    site_entry: Callable | None = None
    api: Mapping[str, Callable] = field(default_factory=dict)
    shared_parameters: tuple = ()
    hotswap: Any = None


_SPECS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Register a method; a second method of the same name (or config name) is an error, not an overwrite."""
    if spec.name in _SPECS or spec.name == ConfigUnion.method:
        raise AdapterError(f"a method named {spec.name!r} is already registered; pick another name")
    if getattr(spec.config, "method", None) != spec.name:
        raise AdapterError(f"method {spec.name!r}: its config class {spec.config.__name__} has method "
                           f"{getattr(spec.config, 'method', None)!r}; they must agree")
    taken = [n for n in spec.config_names if n in ADAPTER_CONFIG_MAP]
    if taken:  # checked before anything is registered, so a refused spec leaves no trace
        raise AdapterError(f"method {spec.name!r}: config name(s) {', '.join(map(repr, taken))} are already "
                           "registered; pick other names")
    for public_name, cls in spec.exports.items():
        register_config_class(public_name, cls)
    for config_name, config in spec.config_names.items():
        register_config_name(config_name, config)
    AdapterConfig.register_method(spec.config)
    _SPECS[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a method and its config names (for plug-in tests)."""
    from .configs.registry import unregister_config_names
    spec = _SPECS.pop(name)
    unregister_config_names(spec.config_names)
    AdapterConfig._by_method.pop(name, None)


def api_function(name: str) -> Callable:
    """The method-provided model API function `name` (MethodSpec.api)."""
    for spec in _SPECS.values():
        if name in spec.api:
            return spec.api[name]
    raise AdapterError(f"no registered method provides {name!r}")


def specs() -> list[MethodSpec]:
    return list(_SPECS.values())


def members(config: AdapterConfig) -> list[AdapterConfig]:
    """The single-method configs of an adapter config (a ConfigUnion has several)."""
    return list(config) if isinstance(config, ConfigUnion) else [config]


def spec_for(config: AdapterConfig | str) -> MethodSpec:
    """The spec of a single-method config (or of a method name)."""
    name = config if isinstance(config, str) else config.method
    try:
        return _SPECS[name]
    except KeyError:
        raise AdapterError(
            f"no method is named {name!r}; available: {', '.join(sorted(_SPECS))}"
        ) from None


def spec_named(name: str) -> MethodSpec | None:
    """The spec of the method called `name`, or None."""
    return _SPECS.get(name)


def member_specs(config: AdapterConfig) -> list[tuple[AdapterConfig, MethodSpec]]:
    return [(member, spec_for(member)) for member in members(config)]


def member_of(config: AdapterConfig, method: str) -> AdapterConfig | None:
    """`config` itself, or its union member of method `method`; None if it has none."""
    return next((m for m in members(config) if m.method == method), None)


def build(state, name: str, config: AdapterConfig) -> None:
    """Build adapter `name`'s modules. A method whose init changes the base weights (LoRA's PiSSA / OLoRA) writes
    them through `Projection.set`: the rows are copied first into `state.initialised[name]`, and `unbuild`
    (delete_adapter) writes them back bit for bit. A failed build is undone the same way. (A checkpoint's dry
    run has no such record and writes nothing.) A member with `init_weights_seed` builds every module from that
    seed (nn/seeding.py)."""
    why = refusal(state.interface, config)  # a model without an interface takes module-targeted adapters only
    if why:
        raise AdapterError(f"cannot add adapter {name!r}: {why}")
    initialised = getattr(state, "initialised", None)
    snapshot = MergeSnapshot()
    try:
        with recording(name, snapshot, getattr(state, "merged", {}), lambda module: _module_name(state.model, module),
                       action="add", initialised=initialised):
            for member, spec in member_specs(config):
                with seeded_build(member.init_weights_seed):
                    spec.build(state, name, member)
    except BaseException:
        snapshot.restore()
        raise
    if snapshot.pieces and initialised is not None:
        initialised[name] = snapshot


def check_unbuild(state, name: str) -> None:
    """Refuse to delete adapter `name` while another merged adapter holds rows its init changed (restoring the
    original rows would undo that merge)."""
    snapshot = state.initialised.get(name)
    if snapshot is None:
        return
    for other, merged in state.merged.items():
        if other == name:
            continue
        module = snapshot.overlap(merged)
        if module is not None:
            raise AdapterError(
                f"cannot delete {name!r}: its init changed {_module_name(state.model, module)}, and adapter "
                f"{other!r} is merged into the same rows; reset_adapter({other!r}) first")


def unbuild(state, name: str) -> None:
    """Write back the base rows adapter `name`'s init changed (nothing for most methods)."""
    snapshot = state.initialised.pop(name, None)
    if snapshot is not None:
        snapshot.restore()


def _labels(config: AdapterConfig) -> str:
    return ", ".join(spec.label for _, spec in member_specs(config))


def merge(state, name: str, config: AdapterConfig) -> None:
    """Fold adapter `name` into the base weights, keeping a copy of every row it writes (merge_snapshot.py) in
    `state.merged[name]`. Merging it again re-merges its current tensors from the restored base. A merge that
    fails (or writes rows another merged adapter holds) is undone: the weights are exactly as before."""
    check_mergeable(name, config)
    spec = spec_for(config)
    if name in state.merged:
        state.merged.pop(name).restore()
    snapshot = MergeSnapshot()
    versions = _versions(state.model)
    try:
        with recording(name, snapshot, dict(state.merged), lambda module: _module_name(state.model, module)):
            spec.merge(state, name, config)
        _check_recorded(state.model, name, versions, snapshot)
    except BaseException:
        snapshot.restore()
        raise
    state.merged[name] = snapshot


def reset(state, name: str, config: AdapterConfig) -> None:
    """Write back the base rows merged adapter `name` overwrote (bit for bit) and drop the copy; then the
    method's own `reset`, if it has one, for anything besides the weights."""
    snapshot = state.merged.pop(name, None)
    if snapshot is None:
        return
    snapshot.restore()
    for member, spec in member_specs(config):
        if spec.reset is not None:
            spec.reset(state, name, member)


def check_mergeable(name: str, config: AdapterConfig) -> None:
    if isinstance(config, ConfigUnion):
        raise AdapterError(
            f"adapter {name!r} is a union of {', '.join(m.method for m in config)} and cannot be merged; "
            f"only {_mergeable()} adapters can be merged")
    if spec_for(config).merge is None:
        raise AdapterError(
            f"adapter {name!r} is a {config.method} adapter and cannot be merged into the model weights; "
            f"only {_mergeable()} adapters can be merged")


def _versions(model) -> dict[int, tuple[str, object, int]]:
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {id(t): (n, t, t._version) for n, t in tensors}


def _check_recorded(model, name: str, versions: dict, snapshot: MergeSnapshot) -> None:
    """Exact reset needs every write to go through `Projection.set`: a merge that changed another tensor in place
    is a method's bug, named here (such a write cannot be undone)."""
    recorded = snapshot.tensors()
    stray = [n for key, (n, t, v) in versions.items() if t._version != v and key not in recorded]
    if stray:
        raise AdapterError(
            f"merging {name!r} changed {', '.join(stray)} outside Projection.set, so reset could not restore "
            "them; a method's merge must write the base weights through Projection.set (these were not restored)")


def _module_name(model, module) -> str:
    return next((n for n, m in model.named_modules() if m is module), type(module).__name__)


def _mergeable() -> str:
    return " and ".join(s.label.replace(" / ", " and ") for s in _SPECS.values() if s.merge is not None) or "no"


def before_forward(state, names: set[str]) -> None:
    """Every method's per-forward work (most have none)."""
    for spec in _SPECS.values():
        if spec.before_forward is not None:
            spec.before_forward(state, names)


def check_blocks(configs: Mapping[str, AdapterConfig], block: AdapterCompositionBlock) -> None:
    """Every adapter beneath `block` must run it: its methods' declared `blocks` (a lone adapter in a Stack is
    plain activation and always allowed)."""
    children = block.children
    if isinstance(block, Stack) and len(children) == 1 and isinstance(children[0], str):
        return
    for name in block.flatten():
        for _, spec in member_specs(configs[name]):
            if type(block) not in spec.blocks:
                allowed = ", ".join(t.__name__ for t in spec.blocks) or "no composition blocks (run it alone)"
                raise AdapterError(
                    f"{type(block).__name__} is not supported for {spec.label} adapter {name!r} (in {block!r}); "
                    f"{spec.label} adapters support: {allowed}"
                )
