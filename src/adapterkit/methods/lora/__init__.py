"""LoRA (`W x + (alpha/r) B A x`) and (IA)^3 (`l * (W x)`) on the model's projections. One folder: config,
modules, build / merge, the fused fast path, averaging strategies, PEFT and AdapterHub maps, and the spec
registered below."""

from ...blocks import Average, BatchSplit, MultiTask, Parallel, Stack
from ...registry import MethodSpec, register_method
from . import adapterhub, peft
from .averaging import STRATEGIES
from .build import build, merge
from .config import IA3Config, LoRAConfig
from .modules import IA3, IA3Input, LoRA

SPEC = register_method(MethodSpec(
    name="lora", label="LoRA / (IA)^3", config=LoRAConfig, build=build, merge=merge,
    config_names={"lora": LoRAConfig(), "ia3": IA3Config()},
    blocks=(Stack, BatchSplit, Parallel, Average, MultiTask), averaging=STRATEGIES,
    formats={"adapterhub": adapterhub, "peft": peft},
    exports={"LoRAConfig": LoRAConfig, "IA3Config": IA3Config},
))

__all__ = ["SPEC", "LoRAConfig", "IA3Config", "LoRA", "IA3", "IA3Input"]
