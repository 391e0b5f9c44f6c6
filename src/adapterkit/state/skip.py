"""AdapterDrop (Rücklé et al., 2021): `skip_layers`, the layers whose adapters a forward leaves out.

As in the `adapters` package, every adapter of the active setup at a skipped layer is left out (bottleneck,
LoRA, prefix and any other per-layer module); model-level modules (invertible adapters, prompts) run. Given to
`set_active_adapters(setup, skip_layers=...)` (kept until the next call) or to one forward (`model(...,
skip_layers=[...])`, which takes precedence for that forward)."""

from __future__ import annotations

from ..errors import AdapterError


def check_skip_layers(skip_layers, n_layers: int, merged) -> frozenset | None:
    """`skip_layers` as a frozenset of layer indices; None stays None (skip nothing). Merged adapters are part of
    the base weights and cannot be left out, so skipping with any merged adapter is refused."""
    if skip_layers is None:
        return None
    if isinstance(skip_layers, (str, bytes)) or not hasattr(skip_layers, "__iter__"):
        raise AdapterError(f"skip_layers={skip_layers!r} must be a list of layer indices (0 .. {n_layers - 1}) "
                           "or None")
    layers = list(skip_layers)
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers]
    if bad:
        raise AdapterError(f"skip_layers has {bad!r}: layer indices must be ints in 0 .. {n_layers - 1} "
                           f"(this model has {n_layers} layers)")
    if layers and merged:
        raise AdapterError(f"skip_layers cannot leave out merged adapter(s) {', '.join(map(repr, merged))}: their "
                           "weights are in the base model; reset_adapter them first")
    return frozenset(layers)
