"""MTL-LoRA (the `adapters` package's "mtl_lora"): LoRA with task-specific Lambda and mixing weights over shared
up-projections. One adapter per task, run together in a `MultiTask` block with `task_ids` in the forward; tasks
share `lora_A` / `lora_B` after `model.share_parameters(MultiTask(...))` (sharing.py does that for any method that
declares `shared_parameters`)."""

from ...blocks import Average, BatchSplit, MultiTask, Parallel, Stack
from ...registry import MethodSpec, register_method
from . import adapterhub
from .build import build, merge
from .config import MTLLoRAConfig
from .modules import MTLLoRA

SPEC = register_method(MethodSpec(
    name="mtl_lora", label="MTL-LoRA", config=MTLLoRAConfig, build=build, merge=merge,
    config_names={"mtl_lora": MTLLoRAConfig()},
    blocks=(Stack, BatchSplit, Parallel, Average, MultiTask),
    formats={"adapterhub": adapterhub}, exports={"MTLLoRAConfig": MTLLoRAConfig},
    shared_parameters=("lora_A", "lora_B"),
))

__all__ = ["SPEC", "MTLLoRAConfig", "MTLLoRA"]
