"""Projection adapters that add a weight update: `out + x dW^T`, with dW (out, in) built from trained factors.

LoHa and LoKr (peft's LyCORIS family) differ only in how they build dW, so the forward, the dropouts, merging and
the protocol the projection site and its composition ask for (`module(x, out)`, `combine = "add"`, `delta(x)`) live
here once. The update is built in the adapter's dtype and applied to x cast to it (dtypes.py).

Alone on a whole nn.Linear / Conv1D (`run_whole`), the projection runs once with `W + dW`: dW is a full (out, in)
matrix, so `x W^T + x dW^T` would pay a second projection-sized matmul (measured: unmerged LoHa inference 1.18x
the plain forward of bert-base, peft 1.19x; the forward and backward each save one matmul per projection).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from ..configs.module_targets import select, target_key
from ..configs.patterns import settle
from ..errors import AdapterError
from ..projection import Projection
from .dtypes import cast
from .module_target import KernelTarget, kind_of, targeted_modules


_WHOLE = (nn.Linear, Conv1D)  # the exact types whose forward `run_whole` reproduces (not subclasses: quantised...)


class DeltaWeight(nn.Module):
    """Subclasses build `update()`: dW before scaling, (out, in). `scaling` multiplies it (alpha / r)."""

    combine = "add"

    def __init__(self, scaling: float, rank_dropout: float = 0.0, module_dropout: float = 0.0,
                 rescale_rank_dropout: bool = True):
        super().__init__()
        self.scaling = scaling
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        self.rescale_rank_dropout = rescale_rank_dropout

    def update(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """dW = scaling * update(); in training with rank dropout, whole output rows dropped (as peft)."""
        weight = self.update() * self.scaling
        if self.training and self.rank_dropout > 0:
            keep = (torch.rand(weight.shape[0], device=weight.device) > self.rank_dropout).to(weight.dtype)
            if self.rescale_rank_dropout:
                keep = keep / keep.mean()
            weight = weight * keep.unsqueeze(1)
        return weight

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """`x dW^T` in x's dtype: what the projection adds, and what an Average weighs. On a convolution (a
        module-targeted LoHa, `conv` set by the build) dW (out, in * kernel) is its kernel, as peft's."""
        weight = self.delta_weight()
        conv = self.__dict__.get("conv")
        if conv is not None:
            apply = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
            return cast(apply(cast(x, weight.dtype), weight.view(conv.weight.shape), None, conv.stride, conv.padding,
                              conv.dilation, conv.groups), x.dtype)
        return cast(F.linear(cast(x, weight.dtype), weight), x.dtype)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.training and self.module_dropout > 0 and float(torch.rand(1)) <= self.module_dropout:
            return out  # the whole module skipped for this step (peft's module_dropout)
        return out + cast(self.delta(x), out.dtype)

    def routable(self) -> bool:
        return False

    def run_whole(self, projection: nn.Module, x, transposed: bool, args: tuple, kwargs: dict):
        """`x (W + dW)^T + b` in one matmul where that is the same computation, else None (the plain path)."""
        if type(projection) not in _WHOLE or len(args) != 1 or kwargs or not isinstance(x, torch.Tensor):
            return None
        if self.training and self.module_dropout > 0:
            return None  # skipped at random per call: the plain path decides
        if self._forward_pre_hooks or self._forward_hooks:
            return None  # hooks on the adapter module itself: it has to be called
        weight, bias = projection.weight, projection.bias
        if type(weight) is not nn.Parameter and type(weight) is not torch.Tensor:
            return None  # a tensor-subclass weight (torchao's quantized ones) cannot be added to
        delta = self.delta_weight()
        if x.dtype != weight.dtype or delta.dtype != weight.dtype or torch.is_autocast_enabled(x.device.type):
            return None
        return F.linear(x, (weight.t() if transposed else weight) + delta, bias)

    def merge_into(self, projection) -> None:
        """W + dW, never with rank dropout (a merge in training mode must not drop rows at random)."""
        weight = projection.weight()
        projection.set(weight + (self.update() * self.scaling).to(weight.dtype).view(weight.shape))


def build_on_projections(state, name: str, config, make, convolutions: bool = False) -> None:
    """One `make(in_features, out_features, r, alpha)` module on each projection `config.locations()` selects, r
    and alpha that module's after the config's `rank_pattern` / `alpha_pattern` (keyed by the projection module's
    full name in the model, as peft). `convolutions`: the method also takes nn.Conv1d / nn.Conv2d modules named
    by `target_modules` (dW over the flattened kernel, `in * kernel` inputs: peft's LoHa without
    use_effective_conv2d)."""
    if config.target_modules is not None:
        _build_targeted(state, name, config, make, convolutions)
        return
    names = {id(m): n for n, m in state.model.named_modules()}
    adapted = []
    for layer_id, location, projection in state.projections(config.locations(state.interface), config.leave_out):
        module_name = names.get(id(projection.module), "")
        adapted.append(module_name)
        module = make(projection.in_features, projection.out_features, *config.rank_for(module_name))
        state.add_layer_module(name, layer_id, location, module, site="linear", target=projection)
    settle(state, name, config, adapted)


def _build_targeted(state, name: str, config, make, convolutions: bool) -> None:
    """The same on the modules `target_modules` selects (configs/module_targets.py), kept at model level."""
    adapted = []
    method = type(config).__name__.removesuffix("Config")
    for module_name, module in select(state.model, config.target_modules, config.exclude_modules):
        kind = kind_of(module)
        if kind == "linear":
            target = Projection(module)
            fan_in = target.in_features
        elif convolutions and kind in ("conv1d", "conv2d"):
            if module.padding_mode != "zeros":
                raise AdapterError(f"{method} on {module_name}: padding_mode={module.padding_mode!r}; convolutions "
                                   "with zero padding only (as peft computes its update)")
            target = KernelTarget(module)
            fan_in = module.weight[0].numel()
        else:
            takes = "nn.Linear, Conv1D, nn.Conv1d and nn.Conv2d" if convolutions else "linear modules only (nn.Linear, " \
                "Conv1D; peft's convolution form of this method is not implemented here)"
            raise AdapterError(f"{method}: target_modules selects {module_name} ({type(module).__name__}); "
                               f"{method} takes {takes}; narrow target_modules or add exclude_modules")
        adapted.append(module_name)
        made = make(fan_in, target.out_features, *config.rank_for(module_name))
        if kind != "linear":
            made.__dict__["conv"] = module
        state.add_model_module(name, target_key(module_name), made, site="linear", target=target)
    settle(state, name, config, adapted)


@torch.no_grad()
def merge(state, name: str, config) -> None:
    """Fold each module's dW into its projection, through `Projection.set` (the generic merge keeps the rows it
    writes, refuses rows another merged adapter holds, and reset restores them bit for bit: registry.merge)."""
    for key, module in [*state.layer_modules(name), *targeted_modules(state, name)]:
        module.merge_into(state.sites[key].target)
