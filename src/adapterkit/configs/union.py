"""ConfigUnion: several methods in one adapter (MAM, UniPELT, or any valid combination)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

from ..errors import AdapterConfigError
from .base import AdapterConfig
from .bottleneck import BnConfig, ParBnConfig, SeqBnConfig
from .lora import LoRAConfig
from .prefix_tuning import PrefixTuningConfig


@AdapterConfig.register_architecture
@dataclass(eq=False, init=False)
class ConfigUnion(AdapterConfig):
    """Methods applied together under one adapter name.

    Valid: no nesting; at most one config per architecture, except two bottleneck configs at different
    locations (one only after attention, the other only after the FFN).
    """

    architecture: ClassVar[str] = "union"
    configs: list

    def __init__(self, *configs: AdapterConfig):
        self.configs = list(configs)
        self.validate()

    def validate(self) -> None:
        if not self.configs:
            raise AdapterConfigError("ConfigUnion needs at least one config")
        for config in self.configs:
            if isinstance(config, ConfigUnion):
                raise AdapterConfigError("ConfigUnion cannot contain another ConfigUnion (no nesting)")
            if not isinstance(config, AdapterConfig):
                raise AdapterConfigError(f"ConfigUnion members must be adapter configs, got {type(config).__name__}")
        for i, a in enumerate(self.configs):
            for b in self.configs[:i]:
                if a.architecture != b.architecture:
                    continue
                if isinstance(a, BnConfig) and isinstance(b, BnConfig):
                    if a.mh_adapter != b.mh_adapter and a.output_adapter != b.output_adapter:
                        continue
                    raise AdapterConfigError(
                        "ConfigUnion: two bottleneck configs must sit at different locations (one with "
                        "mh_adapter=True only, the other with output_adapter=True only); got "
                        f"mh_adapter={b.mh_adapter}/{a.mh_adapter}, output_adapter={b.output_adapter}/{a.output_adapter}"
                    )
                raise AdapterConfigError(
                    f"ConfigUnion: two {a.architecture} configs cannot be combined; allowed: one per architecture "
                    "(two bottlenecks only at different locations)"
                )

    def __getitem__(self, index: int) -> AdapterConfig:
        return self.configs[index]

    def __iter__(self):
        return iter(self.configs)

    def __len__(self) -> int:
        return len(self.configs)

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "configs": [c.to_dict() for c in self.configs]}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> "ConfigUnion":
        unknown = sorted(set(data) - {"configs"})
        if unknown or not isinstance(data.get("configs"), list):
            raise AdapterConfigError(
                f"a union config dict needs exactly the key 'configs' (a list of config dicts); got keys {sorted(data)}"
            )
        return ConfigUnion(*[AdapterConfig.from_dict(c) for c in data["configs"]])

    def replace(self, **changes: Any) -> "ConfigUnion":
        """Apply each change to every member that has that field (e.g. `use_gating=True`)."""
        for key in changes:
            if not any(key in {f.name for f in fields(c)} for c in self.configs):
                raise AdapterConfigError(f"no member of this ConfigUnion has a field {key!r}")
        return ConfigUnion(*[
            c.replace(**{k: v for k, v in changes.items() if k in {f.name for f in fields(c)}}) for c in self.configs
        ])


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
