"""The model as adapters see it: its layers (one list over all stacks), sizes, and where an interface's locations
and projections exist. Read-only: building an adapter asks it, and so does a checkpoint's dry run (io/validate.py)."""

from __future__ import annotations

import torch.nn as nn

from ..errors import AdapterError
from ..interfaces.base import FusedSlice, ModelInterface, is_optional, present, resolve
from ..interfaces.missing import MissingInterface
from ..nn.experts import ExpertsTarget, experts_parameter
from ..projection import Projection
from ..utils import get_submodule


class ModelShape:
    def __init__(self, model: nn.Module, interface: ModelInterface):
        self.model = model
        config = getattr(model, "config", None)
        missing = isinstance(interface, MissingInterface)  # no interface: module-targeted adapters only
        # this checkpoint's layout (variants, head-count-sized fused slices): what every reader below sees
        self.interface = interface = interface if missing else interface.for_config(config)
        self.base = getattr(model, "base_model", model)
        self.layers, self.stacks = ([], []) if missing else _layer_stacks(self.base, interface)
        self.hidden_size = (getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
                            or interface.hidden_size)
        if not self.hidden_size and not missing:
            raise AdapterError(f"{type(model).__name__}.config has no hidden_size (or d_model); adapters need it")
        self.embedding_size = getattr(config, "embedding_size", None) or self.hidden_size

    def layer_ids(self, leave_out=()) -> list[int]:
        return [i for i in range(len(self.layers)) if i not in set(leave_out)]

    def layer_submodule(self, layer_id: int, path: str) -> nn.Module:
        return get_submodule(self.layers[layer_id], path)

    def embeddings_module(self) -> nn.Module:
        """The interface's embeddings module (the first existing alternative of `a|b`: BART's encoder, or its
        decoder where a BartForCausalLM has no encoder)."""
        module = resolve(self.base, self.interface.embeddings)
        if module is None:
            raise AdapterError(f"{type(self.base).__name__} has no embeddings module at "
                               f"{self.interface.embeddings!r}; the architecture interface does not match this model")
        return module

    # -- where a location exists ------------------------------------------------------------------
    def _present(self, what: str, path: str, found: dict) -> dict:
        """Keep `found` ({layer_id: thing}); if nothing was found anywhere, a clear error (unless optional)."""
        if not found and not is_optional(path):
            raise AdapterError(
                f"{what} '{path}' exists in no layer of {type(self.model).__name__}; the architecture interface "
                "does not match this model"
            )
        return found

    def site_layers(self, location: str, leave_out=()) -> list[int]:
        """Layer ids (not left out) where the bottleneck location `location` exists."""
        spec = self.interface.residual_sites.get(location)
        if spec is None:
            raise AdapterError(
                f"{type(self.model).__name__} has no {location!r} site in its interface; "
                f"available: {', '.join(self.interface.residual_sites)}{self.interface.why_missing(location)}"
            )
        found = {i: True for i, layer in enumerate(self.layers) if present(layer, spec)}
        anchor = "|".join(s.anchor for s in spec) if isinstance(spec, tuple) else spec.anchor
        self._present(f"the {location} site", anchor, found)
        return [i for i in self.layer_ids(leave_out) if i in found]

    def projections(self, locations, leave_out=(), experts: bool = False) -> list[tuple[int, str, Projection]]:
        """(layer id, location, Projection) for each (location, spec) of the interface, layer by layer.

        A path naming a 3D parameter (a mixture-of-experts module's fused experts weight) gives an `ExpertsTarget`
        where the caller takes them (`experts`), else a clear error."""
        config = getattr(self.model, "config", None)
        found: dict[str, dict[int, Projection]] = {}
        for location, spec in locations:
            path = spec.module if isinstance(spec, FusedSlice) else spec
            hits = {}
            for i, layer in enumerate(self.layers):
                module = resolve(layer, path)
                if module is None:
                    param = None if isinstance(spec, FusedSlice) else experts_parameter(layer, path)
                    if param is not None:
                        hits[i] = self._experts_target(location, path, param, experts)
                    continue
                if isinstance(spec, FusedSlice) and spec.sizes and not spec.per_head:
                    start = sum(spec.sizes[:spec.index])
                    hits[i] = Projection(module, slice(start, start + spec.sizes[spec.index]))
                elif isinstance(spec, FusedSlice):
                    text = config.get_text_config() if hasattr(config, "get_text_config") else config
                    heads = (spec.per_head if isinstance(spec.per_head, int) or not spec.per_head
                             else getattr(config, spec.per_head, None) or getattr(text, spec.per_head))
                    # (a per-head count a nested text config holds: Fuyu)
                    hits[i] = Projection.fused(module, spec.index, spec.parts, heads, spec.sizes)
                else:
                    hits[i] = Projection(module)
            found[location] = self._present(f"the {location} projection", path, hits)
        return [(i, location, found[location][i]) for i in self.layer_ids(leave_out)
                for location, _ in locations if i in found[location]]


    def _experts_target(self, location: str, path: str, param, experts: bool) -> ExpertsTarget:
        if not experts:
            raise AdapterError(
                f"the {location} projection '{path}' of {type(self.model).__name__} is a fused mixture-of-experts "
                "weight (one 3D parameter for all experts), which this method cannot adapt; leave that location out "
                "(e.g. intermediate_lora / output_lora) or use LoRA or (IA)^3, which adapt each expert")
        widths = {"out_width": self.hidden_size} if location.startswith("output") else {"in_width": self.hidden_size}
        return ExpertsTarget(*param, **widths)


def _layer_stacks(base: nn.Module, interface: ModelInterface) -> tuple[list[nn.Module], list[tuple[str, int, int]]]:
    """All layers of the interface's stacks, numbered one stack after the other; (path, first id, count) each."""
    layers: list[nn.Module] = []
    stacks = []
    for path in interface.layers:
        stack = resolve(base, path)
        if stack is None:
            if is_optional(path):
                continue
            get_submodule(base, path.rstrip("?"))  # raises the clear error
        stacks.append((path.rstrip("?"), len(layers), len(stack)))
        layers += list(stack)
    if not stacks:
        raise AdapterError(f"{type(base).__name__} has none of the layer stacks {list(interface.layers)}; "
                           "the architecture interface does not match this model")
    return layers, stacks
