"""peft's task-arithmetic combination types for LoRA (`add_weighted_adapter`): TIES, DARE, magnitude pruning and
their SVD forms. The tensor math is nn/task_arithmetic.py; this module says what it is applied to.

- "ties", "dare_linear", "dare_ties", "magnitude_prune": merged factor by factor. Source i's A is weighed by
  `sign(w_i s_i) sqrt(|w_i s_i|)` and its B by `sqrt(|w_i s_i|)` (s_i its alpha / r), so a plain weighted sum would
  give `sum_i w_i s_i B_i A_i` for one source; the new adapter has the sources' r and scaling 1.
- "svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd": the sources' updates
  `s_i B_i A_i` merged, then truncated by SVD to `svd_rank` (default: the sources' r): B = U S, A = Vh, scaling 1;
  `svd_clamp` clamps both to the q-quantile of their entries, `svd_full_matrices` / `svd_driver` go to
  torch.linalg.svd.

Same random masks as peft (DARE): seed torch alike before both calls. peft first creates the new adapter's modules,
which advances torch's CPU generator (per projection, in the model's module order: nn.Linear(in, r) and
nn.Linear(r, out) default inits, then A's Kaiming init again: peft's default `init_lora_weights=True`); adapterkit
creates its new adapter without drawing (averaging.py) and advances the generator by the same draws (`_as_peft`).
Then masks are drawn per projection in the model's module order, A before B (or the update, laid out as the model
stores it: (in, out) on GPT-2's Conv1D), sources in the order given.
Differences from peft: the new adapter never keeps the sources' rsLoRA (peft's keeps `use_rslora`, which makes its
update sqrt(r) too large), and one source is merged with the strategy asked for (peft silently falls back to its
"linear").
"""

from __future__ import annotations

import math

import torch

from ...errors import AdapterError
from ...nn import task_arithmetic as ta
from .strategy import Strategy
from .modules import LoRA

_DRIVERS = (None, "gesvd", "gesvdj", "gesvda")


def _in_model_order(model, adapter_name: str) -> list[tuple[tuple, LoRA]]:
    """The adapter's LoRA modules in the order of the projections they update in `model.named_modules()` (peft's
    order of visits, hence of random draws)."""
    state = model.adapter_state
    position = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
    found = [(key, m) for key, m in state.layer_modules(adapter_name) if isinstance(m, LoRA)]

    def rank(item):
        site = state.sites.get(item[0])
        return position.get(id(getattr(getattr(site, "target", None), "module", None)), len(position))
    return sorted(found, key=rank)  # stable: a fused projection's parts keep their order


def _as_peft(modules: list[LoRA], rank: int) -> None:
    """Advance torch's CPU generator as peft's creation of the new adapter's LoRA modules does (docstring)."""
    for module in modules:
        fan_in, fan_out = module.lora_A.shape[1], module.lora_B.shape[0]
        for shape in ((rank, fan_in), (fan_out, rank), (rank, fan_in)):
            torch.empty(shape).uniform_()


def _check_common(name: str, kind: str, options: dict) -> None:
    if ta.needs_density(kind):
        density = options["density"]
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
            raise AdapterError(f"density={density!r} must be a number in (0, 1] (the fraction of entries "
                               f"combine_strategy {name!r} keeps)")
    if options["majority_sign_method"] not in ta.SIGN_METHODS:
        raise AdapterError(f"unknown majority_sign_method {options['majority_sign_method']!r}; allowed: "
                           f"{', '.join(ta.SIGN_METHODS)}")


class FactorMerge(Strategy):
    """"ties", "dare_linear", "dare_ties", "magnitude_prune": A and B merged apart (module docstring)."""

    def __init__(self, kind: str):
        accepts = ("density",) + (("majority_sign_method",) if ta.elects_sign(kind) else ())
        super().__init__(kind, accepts=accepts, requires=("density",))
        self.kind = kind

    def config(self, config, names: list[str], options: dict):
        config = super().config(config, names, options)
        return config.replace(alpha=config.r, use_rslora=False)  # scaling 1: the sources' are in the factors

    def check(self, model, names: list[str], options: dict) -> None:
        _check_common(self.name, self.kind, options)

    @torch.no_grad()
    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              options: dict) -> None:
        state, visits = model.adapter_state, _in_model_order(model, adapter_name)
        if self.kind.startswith("dare"):
            _as_peft([m for _, m in visits], model.adapters_config[adapter_name].r)
        for key, module in visits:
            parts = [state.module_at(n, key) for n in names]
            scaled = [w * m.scaling for w, m in zip(weights, parts)]
            root = [math.sqrt(abs(v)) for v in scaled]
            signed = [r if v >= 0 else -r for r, v in zip(root, scaled)]
            for target, factor, factor_weights in ((module.lora_A, "lora_A", signed), (module.lora_B, "lora_B", root)):
                merged = ta.merge(self.kind, [getattr(m, factor) for m in parts], factor_weights,
                                  options["density"], options["majority_sign_method"])
                target.copy_(merged)


class SvdMerge(Strategy):
    """"svd" and "<kind>_svd": the updates merged, then truncated by SVD (module docstring)."""

    def __init__(self, kind: str):
        accepts = ("svd_rank", "svd_clamp", "svd_full_matrices", "svd_driver")
        if ta.needs_density(kind):
            accepts += ("density",) + (("majority_sign_method",) if ta.elects_sign(kind) else ())
        super().__init__("svd" if kind == "linear" else f"{kind}_svd", accepts=accepts,
                         requires=("density",) if ta.needs_density(kind) else ())
        self.kind = kind

    def config(self, config, names: list[str], options: dict):
        config = super().config(config, names, options)
        rank = config.r if options["svd_rank"] is None else options["svd_rank"]
        return config.replace(r=rank, alpha=rank, use_rslora=False)

    def check(self, model, names: list[str], options: dict) -> None:
        _check_common(self.name, self.kind, options)
        rank = options["svd_rank"]
        self.check_rank(model, names, model.adapter_state.require(names[0]).r if rank is None else rank)
        clamp = options["svd_clamp"]
        if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float))
                                  or not 0 <= clamp <= 1):
            raise AdapterError(f"svd_clamp={clamp!r} must be a quantile in [0, 1] (or None: no clamping)")
        if not isinstance(options["svd_full_matrices"], bool):
            raise AdapterError(f"svd_full_matrices={options['svd_full_matrices']!r} must be True or False")
        driver = options["svd_driver"]
        if driver not in _DRIVERS:
            raise AdapterError(f"unknown svd_driver {driver!r}; allowed: None, {', '.join(map(repr, _DRIVERS[1:]))}")
        if driver is not None and next(model.adapterkit[names[0]].parameters()).device.type != "cuda":
            raise AdapterError(f"svd_driver={driver!r} picks a cuSOLVER method: it needs adapters on a CUDA device")

    @torch.no_grad()
    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              options: dict) -> None:
        state = model.adapter_state
        rank, visits = model.adapters_config[adapter_name].r, _in_model_order(model, adapter_name)
        if self.kind.startswith("dare"):
            _as_peft([m for _, m in visits], rank)
        for key, module in visits:
            transposed = getattr(getattr(state.sites.get(key), "target", None), "transposed", False)
            deltas = [state.module_at(n, key).delta_weight() for n in names]
            deltas = [d.T for d in deltas] if transposed else deltas  # peft draws masks on the stored layout
            merged = ta.merge(self.kind, deltas, weights, options["density"], options["majority_sign_method"])
            merged = merged.T if transposed else merged
            u, s, vh = torch.linalg.svd(merged, full_matrices=options["svd_full_matrices"],
                                        driver=options["svd_driver"])
            u, vh = u[:, :rank] * s[:rank], vh[:rank]
            if options["svd_clamp"] is not None:
                high = torch.quantile(torch.cat([u.flatten(), vh.flatten()]), options["svd_clamp"])
                u, vh = u.clamp(-high, high), vh.clamp(-high, high)
            module.lora_B.copy_(u)
            module.lora_A.copy_(vh)


STRATEGIES = [FactorMerge(kind) for kind in ta.KINDS if kind != "linear"] + [SvdMerge(kind) for kind in ta.KINDS]
