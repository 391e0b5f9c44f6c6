"""Mixture-of-experts weights stored as one 3D parameter, as LoRA-type methods see them: E weights W_e (out, in).

transformers 5 fuses a MoE layer's experts into one module holding `gate_up_proj` [E, 2I, H] and `down_proj`
[E, H, I] (or transposed, [E, in, out], where the module says `is_transposed`, as transformers'
`use_experts_implementation` records; Llama 4's experts do not say, so their layout is read off the shapes), and
computes every expert from them in its own (swappable) kernels. No per-expert Linear exists to take over, so the
adapters change the weight the kernels read (sites/experts.py); `ExpertsTarget` reads and writes that parameter in
the (E, out, in) orientation and, like `Projection`, goes through the merge snapshot so reset is exact.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .. import merge_snapshot
from ..errors import AdapterError
from ..utils import find_submodule


def experts_parameter(layer: nn.Module, path: str) -> tuple[nn.Module, str] | None:
    """(owning module, parameter name) where `path` (relative to `layer`; `a|b`: the first that exists, a trailing
    `?` ignored) ends in a 3D parameter, else None."""
    for alternative in path.rstrip("?").split("|"):
        owner_path, _, name = alternative.rpartition(".")
        owner = find_submodule(layer, owner_path)
        param = owner._parameters.get(name) if owner is not None else None
        if param is not None and param.dim() == 3:
            return owner, name
    return None


def _transposed(module: nn.Module, name: str, in_width: int | None, out_width: int | None) -> bool:
    declared = getattr(module, "is_transposed", None)
    if isinstance(declared, bool):
        return declared
    _, a, b = module._parameters[name].shape
    plain = (in_width in (None, b)) and (out_width in (None, a))
    flipped = (in_width in (None, a)) and (out_width in (None, b))
    if plain != flipped:
        return flipped
    raise AdapterError(f"{type(module).__name__}.{name} {tuple(module._parameters[name].shape)}: its layout "
                       "([experts, out, in] or [experts, in, out]) cannot be told from its shape, and the module "
                       "does not declare `is_transposed`")


class ExpertsTarget:
    """Parameter `name` of experts module `module`: E weights W_e (out, in), with the bias `<name>_bias` [E, out]
    where the module has one (GPT-OSS)."""

    rows = None
    backend = None

    def __init__(self, module: nn.Module, name: str, *, in_width: int | None = None, out_width: int | None = None):
        """`in_width` / `out_width`: the known input or output width (the layer's), to read an undeclared layout."""
        self.module = module
        self.name = name
        self.transposed = _transposed(module, name, in_width, out_width)
        experts, a, b = self.parameter.shape
        self.num_experts = experts
        self.out_features, self.in_features = (b, a) if self.transposed else (a, b)
        self.full_out_features = experts  # the merge snapshot covers whole experts

    @property
    def parameter(self) -> nn.Parameter:
        return self.module._parameters[self.name]

    @property
    def bias_parameter(self) -> nn.Parameter | None:
        bias = self.module._parameters.get(f"{self.name}_bias")
        return bias if bias is not None and bias.dim() == 2 else None

    @property
    def owner(self) -> nn.Parameter:
        """What the merge snapshot keys its record on (two parameters of one module are separate targets)."""
        return self.parameter

    def as_math(self, stored: torch.Tensor) -> torch.Tensor:
        """The stored tensor as (E, out, in) (a view)."""
        return stored.transpose(1, 2) if self.transposed else stored

    def as_stored(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.transpose(1, 2) if self.transposed else weight

    def weight(self) -> torch.Tensor:
        return self.as_math(self.parameter.detach()).clone()

    def bias(self) -> torch.Tensor | None:
        bias = self.bias_parameter
        return None if bias is None else bias.detach().clone()

    def part(self, rows) -> "ExpertsTarget":
        return self

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.parameter, self.bias_parameter) if t is not None]

    @torch.no_grad()
    def set(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Write W (E, out, in) and, if given, the bias (E, out) back (first into the merge snapshot)."""
        merge_snapshot.before_write(self)
        param = self.parameter
        param.copy_(self.as_stored(weight.to(device=param.device, dtype=param.dtype)))
        if bias is not None:
            b = self.bias_parameter
            b.copy_(bias.to(device=b.device, dtype=b.dtype))
