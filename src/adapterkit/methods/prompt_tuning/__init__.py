"""Prompt tuning (Lester et al., 2021): learned vectors put before the input sequence. One folder: config, module,
the hooks that insert the prompt (site.py), AdapterHub and PEFT maps, and the spec registered below. It changes no
weight, so it cannot be merged; it runs alone or in a Stack with other methods (one prompt per forward)."""

from ...blocks import Stack
from ...registry import MethodSpec, register_method
from . import adapterhub, peft
from .build import build, placement
from .config import PromptTuningConfig
from .modules import PromptTuning

SPEC = register_method(MethodSpec(
    name="prompt_tuning", label="prompt tuning", config=PromptTuningConfig, build=build,
    config_names={"prompt_tuning": PromptTuningConfig()}, blocks=(Stack,),
    formats={"adapterhub": adapterhub, "peft": peft}, exports={"PromptTuningConfig": PromptTuningConfig},
))

__all__ = ["SPEC", "PromptTuningConfig", "PromptTuning", "placement"]
