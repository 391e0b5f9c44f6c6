"""LoRA (`W x + (alpha/r) B A x`), DoRA (LoRA renormalised per output row) and (IA)^3 (`l * (W x)`) on the
model's projections. One folder: config, modules (DoRA in dora.py), build / merge, the fused fast path, averaging strategies, PEFT and AdapterHub maps, and the spec
registered below."""

from ...blocks import Average, BatchSplit, MultiTask, Parallel, Stack
from ...registry import MethodSpec, register_method
from . import adapterhub, hotswap, peft
from .averaging import STRATEGIES
from .build import build, merge
from .config import DoRAConfig, DvoRAConfig, IA3Config, LoRAConfig, VeraConfig
from .dora import DoRA
from .init import convert_to_plain_lora
from .modules import IA3, IA3Input, LoRA
from .vera import Vera

SPEC = register_method(MethodSpec(
    name="lora", label="LoRA / (IA)^3 / VeRA", config=LoRAConfig, build=build, merge=merge,
    config_names={"lora": LoRAConfig(), "ia3": IA3Config(), "dora": DoRAConfig(), "vera": VeraConfig(),
                  "dvora": DvoRAConfig()},
    blocks=(Stack, BatchSplit, Parallel, Average, MultiTask), averaging=STRATEGIES,
    formats={"adapterhub": adapterhub, "peft": peft},
    exports={"LoRAConfig": LoRAConfig, "IA3Config": IA3Config, "DoRAConfig": DoRAConfig, "VeraConfig": VeraConfig,
             "DvoRAConfig": DvoRAConfig},
    api={"convert_to_plain_lora": convert_to_plain_lora}, hotswap=hotswap,
))

__all__ = ["SPEC", "LoRAConfig", "IA3Config", "DoRAConfig", "VeraConfig", "DvoRAConfig", "LoRA", "DoRA", "IA3",
           "IA3Input", "Vera"]
