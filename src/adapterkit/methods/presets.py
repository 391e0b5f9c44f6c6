"""Presets that combine methods under one adapter name (ConfigUnion): MAM and UniPELT."""

from __future__ import annotations

from ..configs.registry import register_config_class, register_config_name
from ..configs.union import ConfigUnion
from .bottleneck import BnConfig, ParBnConfig, SeqBnConfig
from .lora import LoRAConfig
from .prefix_tuning import PrefixTuningConfig


class MAMConfig(ConfigUnion):
    """Mix-and-Match (He et al., 2021): prefix tuning (bottleneck 800) + a parallel adapter."""

    def __init__(self, prefix_tuning: PrefixTuningConfig | None = None, adapter: BnConfig | None = None):
        super().__init__(prefix_tuning or PrefixTuningConfig(bottleneck_size=800), adapter or ParBnConfig())


class UniPELTConfig(ConfigUnion):
    """UniPELT (Mao et al., 2022): gated prefix tuning (length 10), Pfeiffer adapter (rf 16) and LoRA (r 8)."""

    def __init__(self, prefix_tuning: PrefixTuningConfig | None = None, adapter: BnConfig | None = None,
                 lora: LoRAConfig | None = None):
        members = [prefix_tuning or PrefixTuningConfig(prefix_length=10), adapter or SeqBnConfig(reduction_factor=16),
                   lora or LoRAConfig(r=8, alpha=8)]
        super().__init__(*[m.replace(use_gating=True) for m in members])


register_config_name("mam", MAMConfig())
register_config_name("unipelt", UniPELTConfig())
register_config_class("MAMConfig", MAMConfig)
register_config_class("UniPELTConfig", UniPELTConfig)
