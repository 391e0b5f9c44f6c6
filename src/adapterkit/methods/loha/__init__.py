"""LoHa (peft's `LoHaConfig`): a Hadamard product of two low-rank products added to each targeted projection's
weight. One folder: config, module, the PEFT map and the spec registered below; the forward and merging are the
weight-update family's (nn/delta.py)."""

from ...blocks import Average, BatchSplit, Parallel, Stack
from ...nn.delta import build_on_projections, merge
from ...registry import MethodSpec, register_method
from . import peft
from .config import LoHaConfig
from .modules import LoHa


def build(state, name: str, config: LoHaConfig) -> None:
    build_on_projections(state, name, config,
                         lambda fan_in, fan_out, r, alpha: LoHa(fan_in, fan_out, config, r, alpha),
                         convolutions=True)  # peft's LoHa on Conv1d / Conv2d (nn/delta.py)


SPEC = register_method(MethodSpec(
    name="loha", label="LoHa", config=LoHaConfig, build=build, merge=merge,
    config_names={"loha": LoHaConfig()}, blocks=(Stack, BatchSplit, Parallel, Average),
    formats={"peft": peft}, exports={"LoHaConfig": LoHaConfig},
))

__all__ = ["SPEC", "LoHaConfig", "LoHa"]
