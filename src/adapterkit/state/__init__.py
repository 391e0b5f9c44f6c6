"""Per-model adapter state: the model's shape (shape.py), the module container, installed sites, the plan cache
of the active setup and the per-forward record (record.py).

The adapter weights live in one `nn.ModuleDict` registered on the model as `adapterkit`, grouped per adapter:
`adapterkit.<name>.layers.<layer_id>.<location>.*` and `adapterkit.<name>.shared.<key>.*`. Keys are the same on
every architecture, so a saved adapter is independent of where a model keeps its modules.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
from transformers import PretrainedConfig

from ..blocks import AdapterCompositionBlock
from ..attention import unwrapped_implementation, wrapped_implementation
from ..compose.plan import compile_plan
from ..compose.support import check_supported
from ..context import AdapterSetup, current_override
from ..errors import AdapterError
from ..fusion.container import get_fusion
from ..interfaces.base import ModelInterface
from ..merge_snapshot import MergeSnapshot
from ..quantized import backend_of
from ..nn.seeding import reseed
from ..registry import member_specs
from ..sites import PER_KIND, Site, make_site
from .record import ForwardRecord
from .shape import ModelShape
from .skip import check_skip_layers

CONTAINER = "adapterkit"


class AdapterModules(nn.Module):
    """All modules of one adapter: per layer and location, plus model-level (`shared`) ones.

    `on_meta` (a set shared with the state): holds this entry while any of its weights is on the meta device (no
    data), kept current by every `.to()` of the adapter or the model (`_apply`) and by `refresh_meta()`, so the
    sites need not look at parameters per call."""

    def __init__(self, on_meta: set | None = None):
        super().__init__()
        self.layers = nn.ModuleDict()
        self.shared = nn.ModuleDict()
        self.__dict__["on_meta"] = set() if on_meta is None else on_meta

    def refresh_meta(self) -> None:
        if any(p.is_meta for p in self.parameters()):
            self.on_meta.add(self)
        else:
            self.on_meta.discard(self)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.refresh_meta()
        return out


class PlanCache(dict):
    """setup -> {site key: what the site runs} (compose/plan.py), built once per setup, cleared on any change.

    `routings` holds the per-row routings of recent plain forwards (compose/routing.py), which are built from these
    plans and so are cleared with them."""

    ROUTINGS_KEPT = 4

    def __init__(self):
        super().__init__()
        self.routings: dict = {}

    def clear(self) -> None:
        super().clear()
        self.routings.clear()


class AdapterState(ModelShape):
    """A model's adapters: its shape (ModelShape), the adapter container (`model.adapterkit`, `configs`, `merged`),
    the site registry (`sites`), the plan cache (`plans`) and the per-forward record (`record`)."""

    def __init__(self, model: nn.Module, interface: ModelInterface):
        super().__init__(model, interface)
        self.configs: dict = {}
        self.active: AdapterCompositionBlock | None = None
        self.merged: dict[str, MergeSnapshot] = {}  # merged adapter -> the base rows it overwrote
        self.initialised: dict[str, MergeSnapshot] = {}  # adapter -> the base rows its init changed (PiSSA)
        self.model_frozen = False
        self.skip_layers: frozenset | None = None  # AdapterDrop: layers whose adapters are left out (skip.py)
        self.sites: dict[tuple, Site] = {}
        self.plans = PlanCache()
        self.record = ForwardRecord()
        self.on_meta: set = set()  # adapter entries with weights on the meta device (AdapterModules)
        self.shared_groups: dict = {}  # share_parameters groups: name -> adapters, reference, params (sharing.py)
        model.add_module(CONTAINER, nn.ModuleDict())

    def require(self, name: str):
        """The config of adapter `name`; a clear error naming the added adapters if there is none."""
        if name not in self.configs:
            raise AdapterError(
                f"adapter {name!r} does not exist on this model; added adapters: "
                f"{', '.join(map(repr, self.configs)) or '(none)'}"
            )
        return self.configs[name]

    # -- the container -----------------------------------------------------------------------------
    @property
    def container(self) -> nn.ModuleDict:
        return getattr(self.model, CONTAINER)

    def _placed(self, module: nn.Module, reference) -> nn.Module:
        reference = getattr(reference, "module", reference)  # a Projection: its module
        backend = backend_of(reference)
        if backend is not None:  # quantized: the adapter in float32 at least, as peft's default (trained in it)
            dtype = torch.promote_types(backend.dtype(reference), torch.float32)
            return module.to(device=reference.weight.device, dtype=dtype)
        # the first float parameter (a layer holding quantized projections: their packed integer weights are not)
        param = next((p for p in reference.parameters() if p.is_floating_point()), None)
        return module if param is None else module.to(device=param.device, dtype=param.dtype)

    def _note_meta(self, name: str, placed: nn.Module) -> None:
        """A module placed on the meta device (a model built there) marks its adapter (AdapterModules.on_meta)."""
        if any(p.is_meta for p in placed.parameters()):
            self._entry(name).refresh_meta()

    def _entry(self, name: str) -> AdapterModules:
        if name not in self.container:
            self.container[name] = AdapterModules(self.on_meta)
        return self.container[name]

    def add_layer_module(self, name: str, layer_id: int, location: str, module: nn.Module, *, site: str,
                         target: nn.Module | None = None) -> None:
        layers = self._entry(name).layers
        if str(layer_id) not in layers:
            layers[str(layer_id)] = nn.ModuleDict()
        placed = self._placed(module, target if target is not None else self.layers[layer_id])
        self._ensure_site((layer_id, location), site, target).accept(placed)
        layers[str(layer_id)][location] = placed
        self._note_meta(name, placed)
        reseed()  # a seeded build (init_weights_seed) constructs the next module from the seed again

    def add_model_module(self, name: str, key: str, module: nn.Module, *, site: str | None = None,
                         target=None) -> nn.Module:
        """A model-level module of adapter `name` (`shared.<key>`); `site`: the attach point it needs, if any;
        `target`: the module (or Projection) that site adapts (module-targeted adapters: methods' targets.py)."""
        placed = self._entry(name).shared[key] = self._placed(module, self.base if target is None else target)
        self._note_meta(name, placed)
        reseed()
        if site is not None:
            self._ensure_site(("model", key), site, target)
        return placed

    def module_at(self, name: str, key: tuple) -> nn.Module | None:
        entry = self.container[name] if name in self.container else None
        if entry is None:
            return None
        scope, location = key
        group = entry.shared if scope == "model" else entry.layers[str(scope)] if str(scope) in entry.layers else None
        return group[location] if group is not None and location in group else None

    def entry_at(self, name: str, key: tuple):
        """What adapter `name` runs at the site `key`: at a per-kind site (attention) its method's `site_entry`,
        elsewhere the module it registered there (or None)."""
        config = self.configs.get(name)
        if config is not None and key[1] in PER_KIND and key[0] != "model":
            for _, spec in member_specs(config):
                if spec.site_entry is not None:
                    entry = spec.site_entry(self, name, key)
                    if entry is not None:
                        return entry
            return None
        return self.module_at(name, key)

    def fusion(self, name: str):
        """The AdapterFusion named `name` on the model, or None (compose asks through the state)."""
        return get_fusion(self.model, name)

    def layer_modules(self, name: str) -> Iterator[tuple[tuple[int, str], nn.Module]]:
        for layer_id, group in self.container[name].layers.items():
            for location, module in group.items():
                yield (int(layer_id), location), module

    def replace_member_config(self, name: str, old, new) -> None:
        """Swap one config of adapter `name` (itself, or a member of its union) for `new`."""
        config = self.configs[name]
        if config is old:
            self.configs[name] = new
        else:
            config.configs[config.configs.index(old)] = new

    # -- sites -------------------------------------------------------------------------------------
    def ensure_layer_site(self, layer_id: int, kind: str) -> None:
        self._ensure_site((layer_id, kind), kind, None)

    def use_prefix_attention(self, on: bool) -> None:
        """Route the model's attention through (or back out of) the prefix-aware wrapper.

        Every config object the model's modules hold is switched: some models copy theirs (T5's encoder and
        decoder stacks each own a deep copy)."""
        configs = {id(c): c for c in (getattr(m, "config", None) for m in self.model.modules())
                   if isinstance(c, PretrainedConfig)}
        for config in configs.values():
            current = config._attn_implementation
            config._attn_implementation = wrapped_implementation(current) if on else unwrapped_implementation(current)

    def _ensure_site(self, key: tuple, kind: str, target) -> Site:
        if kind in PER_KIND:  # one per (layer, kind), whatever per-layer module (a gate) asked for it
            key = (key[0], kind)
        if key in self.sites:
            return self.sites[key]
        site = make_site(self, key, kind, target)
        site.install()
        self.sites[key] = site
        return site

    def sync_sites(self) -> None:
        """After a merge or reset: sites that can detach while only merged adapters sit there do so."""
        unmerged = [n for n in self.container if n not in self.merged]
        for site in self.sites.values():
            sync = getattr(site, "sync", None)
            if sync is not None:
                sync(unmerged)

    def drop_adapter_modules(self, name: str) -> None:
        self.on_meta.discard(self.container[name])
        del self.container[name]
        names = list(self.container)
        for key in [k for k, site in self.sites.items() if not site.in_use(names)]:
            self.sites.pop(key).remove()
        self.invalidate()
        self.sync_sites()

    # -- the active setup --------------------------------------------------------------------------
    def invalidate(self) -> None:
        self.plans.clear()

    def check_setup(self, setup: AdapterCompositionBlock | None) -> None:
        """Every name must exist; nesting and each method's supported blocks are checked (compose/support.py)."""
        if setup is None:
            return
        missing = [n for n in setup.flatten() if n not in self.configs]
        if missing:
            raise AdapterError(
                f"adapter(s) {', '.join(map(repr, missing))} do not exist on this model; "
                f"added adapters: {', '.join(map(repr, self.configs)) or '(none)'}"
            )
        check_supported(self, setup)

    def current_setup(self) -> AdapterCompositionBlock | None:
        override = current_override()
        if override is None:
            return self.active
        return None if override is AdapterSetup._NONE else override

    def check_skip_layers(self, skip_layers) -> frozenset | None:
        return check_skip_layers(skip_layers, len(self.layers), list(self.merged))

    def skipped(self, layer_id) -> bool:
        """AdapterDrop: does this forward leave out the adapters of layer `layer_id` (skip.py)?"""
        skip = self.record.skip_layers
        if skip is None:
            skip = self.skip_layers
        return bool(skip) and layer_id in skip

    def active_at(self, key: tuple):
        """What the site at `key` runs now: a tuple of modules, a compiled composition, or ()."""
        if self.skipped(key[0]):
            return ()
        routing = self.record.routing
        if routing is not None:
            return routing.at(key)
        override = current_override()
        return self.plan_for(self.active if override is None else override).get(key, ())

    def plan_for(self, setup) -> dict:
        plan = self.plans.get(setup)
        return self._build_plan(setup) if plan is None else plan

    def _build_plan(self, setup) -> dict:
        plan: dict = {}
        if setup is not None and setup is not AdapterSetup._NONE:
            self.check_setup(setup)
            for key, site in self.sites.items():
                compiled = compile_plan(self, site, setup)
                if compiled:
                    plan[key] = compiled
        self.plans[setup] = plan
        return plan


__all__ = ["AdapterState", "AdapterModules", "CONTAINER", "ForwardRecord", "ModelShape", "PlanCache"]
