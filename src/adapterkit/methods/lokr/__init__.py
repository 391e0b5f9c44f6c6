"""LoKr (peft's `LoKrConfig`): a Kronecker product of two small factors added to each targeted projection's weight.
One folder: config, module, the PEFT map and the spec registered below; the forward and merging are the
weight-update family's (nn/delta.py)."""

from ...blocks import Average, BatchSplit, Parallel, Stack
from ...nn.delta import build_on_projections, merge
from ...registry import MethodSpec, register_method
from . import peft
from .config import LoKrConfig
from .modules import LoKr


def build(state, name: str, config: LoKrConfig) -> None:
    build_on_projections(state, name, config,
                         lambda fan_in, fan_out, r, alpha: LoKr(fan_in, fan_out, config, r, alpha))


SPEC = register_method(MethodSpec(
    name="lokr", label="LoKr", config=LoKrConfig, build=build, merge=merge,
    config_names={"lokr": LoKrConfig()}, blocks=(Stack, BatchSplit, Parallel, Average),
    formats={"peft": peft}, exports={"LoKrConfig": LoKrConfig},
))

__all__ = ["SPEC", "LoKrConfig", "LoKr"]
