"""Adapter configs: dataclasses per method family, the name registry and the config-string parser."""

from .base import AdapterConfig
from .bottleneck import (BnConfig, CompacterConfig, CompacterPlusPlusConfig, DoubleSeqBnConfig, DoubleSeqBnInvConfig, HoulsbyConfig, HoulsbyInvConfig,
                         ParallelConfig, ParBnConfig, PfeifferConfig, PfeifferInvConfig, SeqBnConfig, SeqBnInvConfig)
from .lora import IA3Config, LoRAConfig
from .prefix_tuning import PrefixTuningConfig
from .union import ConfigUnion, MAMConfig, UniPELTConfig
from .registry import ADAPTER_CONFIG_MAP, DEFAULT_ADAPTER_CONFIG, resolve_config

__all__ = [
    "AdapterConfig", "BnConfig", "SeqBnConfig", "SeqBnInvConfig", "DoubleSeqBnConfig", "DoubleSeqBnInvConfig",
    "ParBnConfig", "PfeifferConfig", "PfeifferInvConfig", "HoulsbyConfig", "HoulsbyInvConfig", "ParallelConfig",
    "LoRAConfig", "IA3Config", "CompacterConfig", "CompacterPlusPlusConfig", "PrefixTuningConfig", "ConfigUnion",
    "MAMConfig", "UniPELTConfig", "ADAPTER_CONFIG_MAP", "DEFAULT_ADAPTER_CONFIG", "resolve_config",
]
