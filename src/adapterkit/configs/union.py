"""ConfigUnion: several methods in one adapter (MAM, UniPELT, or any valid combination). Generic: which members
may be combined is each config's `union_conflict`; the presets live with the methods (methods/presets.py)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

from ..errors import AdapterConfigError
from .base import AdapterConfig


@AdapterConfig.register_method
@dataclass(eq=False, init=False)
class ConfigUnion(AdapterConfig):
    """Methods applied together under one adapter name.

    Valid: no nesting; at most one config per method, unless the method allows more (two bottleneck configs
    at different locations: `AdapterConfig.union_conflict`).
    """

    method: ClassVar[str] = "union"
    init_weights_seed: ClassVar[None] = None  # not a field here: each member has its own
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
                problem = a.union_conflict(b)
                if problem:
                    raise AdapterConfigError(f"ConfigUnion: {problem}")

    def __getitem__(self, index: int) -> AdapterConfig:
        return self.configs[index]

    def __iter__(self):
        return iter(self.configs)

    def __len__(self) -> int:
        return len(self.configs)

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.method, "configs": [c.to_dict() for c in self.configs]}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> "ConfigUnion":
        unknown = sorted(set(data) - {"configs"})
        if unknown or not isinstance(data.get("configs"), list):
            raise AdapterConfigError(
                f"a union config dict needs exactly the key 'configs' (a list of config dicts); got keys {sorted(map(repr, data))}"
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
