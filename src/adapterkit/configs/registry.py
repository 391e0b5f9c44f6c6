"""Config names (both name generations) and `resolve_config`, which turns any accepted form into a config."""

from __future__ import annotations

from typing import Any, Mapping, Union

from ..errors import AdapterConfigError
from .base import AdapterConfig
from .bottleneck import (CompacterConfig, CompacterPlusPlusConfig, DoubleSeqBnConfig, DoubleSeqBnInvConfig,
                         ParBnConfig, SeqBnConfig, SeqBnInvConfig)
from .lora import IA3Config, LoRAConfig
from .prefix_tuning import PrefixTuningConfig
from .union import ConfigUnion, MAMConfig, UniPELTConfig
from .parsing import split_config_string

ADAPTER_CONFIG_MAP: dict[str, AdapterConfig] = {
    # adapter-transformers 3.1 names
    "pfeiffer": SeqBnConfig(),
    "houlsby": DoubleSeqBnConfig(),
    "pfeiffer+inv": SeqBnInvConfig(),
    "houlsby+inv": DoubleSeqBnInvConfig(),
    "compacter++": CompacterPlusPlusConfig(),
    "compacter": CompacterConfig(),
    "prefix_tuning": PrefixTuningConfig(),
    "prefix_tuning_flat": PrefixTuningConfig(flat=True),
    "parallel": ParBnConfig(),
    "scaled_parallel": ParBnConfig(scaling="learned"),
    "lora": LoRAConfig(),
    "ia3": IA3Config(),
    "mam": MAMConfig(),
    "unipelt": UniPELTConfig(),
    # adapters 1.x names
    "seq_bn": SeqBnConfig(),
    "double_seq_bn": DoubleSeqBnConfig(),
    "seq_bn_inv": SeqBnInvConfig(),
    "double_seq_bn_inv": DoubleSeqBnInvConfig(),
    "par_bn": ParBnConfig(),
    "scaled_par_bn": ParBnConfig(scaling="learned"),
}

DEFAULT_ADAPTER_CONFIG = "seq_bn"

ConfigLike = Union[str, Mapping[str, Any], AdapterConfig, None]


def resolve_config(config: ConfigLike, **overrides: Any) -> AdapterConfig:
    """Accept a config object, a registered name, a ``name[key=value,...]`` string or a dict (`to_dict` form)."""
    if config is None:
        config = DEFAULT_ADAPTER_CONFIG
    if isinstance(config, AdapterConfig):
        resolved = config
    elif isinstance(config, str) and "|" in config:
        # "prefix_tuning|parallel": a union of the parts (each may carry [key=value] overrides)
        resolved = ConfigUnion(*[resolve_config(part) for part in config.split("|")])
    elif isinstance(config, str):
        name, parsed = split_config_string(config)
        base = ADAPTER_CONFIG_MAP.get(name)
        if base is None:
            raise AdapterConfigError(
                f"unknown adapter config name {name!r}; valid names: {', '.join(ADAPTER_CONFIG_MAP)}"
            )
        resolved = base.replace(**parsed) if parsed else base
    elif isinstance(config, Mapping):
        resolved = AdapterConfig.from_dict(config)
    else:
        raise AdapterConfigError(
            f"config must be an AdapterConfig, a config name, a config string or a dict, got {type(config).__name__}"
        )
    if overrides:
        resolved = resolved.replace(**overrides)
    # Every caller gets its own copy, so editing it never changes a registered default.
    return type(resolved).from_dict(resolved.to_dict())
