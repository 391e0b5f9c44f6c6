"""AdapterFusion configs: "dynamic" (with a value matrix and its regulariser) and "static" (Pfeiffer et al. 2021).

Field names and defaults are those of adapter-transformers / `adapters`, so their saved configs load as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping, Union

from ..errors import AdapterConfigError


@dataclass(eq=False)
class AdapterFusionConfig:
    """How one fusion layer attends over the adapters' up-projections at a site.

    - `query` / `key` / `value`: learned projections (Linear(d, d); the value has no bias). At least one is needed.
    - `query_before_ln`: the query is the sublayer output before the (last fused) adapter's pre-processing norm.
    - `regularization`: `get_fusion_regularization_loss()` pulls the value matrix towards the identity.
    - `residual_before`: add the residual to the adapters' outputs before attending (else to the result).
    - `temperature`: softmax temperature starting at 50, lowered by 0.05 every training forward down to 1.
    - `value_before_softmax`: apply the value matrix to each adapter output (else to the attended result).
    - `value_initialized`: start the value matrix at the identity (off-diagonal 1e-6).
    - `dropout_prob`: dropout on the attention scores; None: the model's `attention_probs_dropout_prob`.
    """

    key: bool = True
    query: bool = True
    value: bool = True
    query_before_ln: bool = False
    regularization: bool = True
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: bool = True
    dropout_prob: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dropout_prob":
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not 0 <= value < 1):
                    raise AdapterConfigError(f"AdapterFusionConfig.dropout_prob={value!r} must be None or in [0, 1)")
            elif not isinstance(value, bool):
                raise AdapterConfigError(f"AdapterFusionConfig.{f.name}={value!r} must be True or False")
        if not (self.query or self.key or self.value):
            raise AdapterConfigError("AdapterFusionConfig needs at least one of query, key, value to be True")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AdapterFusionConfig":
        if not isinstance(data, Mapping):
            raise AdapterConfigError(f"an AdapterFusionConfig dict must be a mapping of field names to values, got "
                                     f"{type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(repr(k) for k in data if k not in names)
        if unknown:
            raise AdapterConfigError(f"unknown AdapterFusionConfig key(s) {', '.join(unknown)}; "
                                     f"allowed keys: {', '.join(sorted(names))}")
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AdapterFusionConfig) and self.to_dict() == other.to_dict()


def StaticAdapterFusionConfig(**overrides) -> AdapterFusionConfig:
    """Static fusion: query and key, no value matrix, no regulariser."""
    return AdapterFusionConfig(**{"value": False, "regularization": False, "value_initialized": False, **overrides})


def DynamicAdapterFusionConfig(**overrides) -> AdapterFusionConfig:
    """Dynamic fusion (the default): query, key and an identity-initialised value matrix, regularised."""
    return AdapterFusionConfig(**overrides)


FUSION_CONFIG_MAP = {"static": StaticAdapterFusionConfig, "dynamic": DynamicAdapterFusionConfig}
DEFAULT_FUSION_CONFIG = "dynamic"


def resolve_fusion_config(config: Union[str, Mapping, AdapterFusionConfig, None], **overrides) -> AdapterFusionConfig:
    """A config object, "dynamic" / "static", or a dict (e.g. an AdapterHub `adapter_fusion_config.json["config"]`)."""
    if config is None:
        config = DEFAULT_FUSION_CONFIG
    if isinstance(config, AdapterFusionConfig):
        data = config.to_dict()
    elif isinstance(config, str):
        if config not in FUSION_CONFIG_MAP:
            raise AdapterConfigError(f"unknown AdapterFusion config {config!r}; valid names: "
                                     f"{', '.join(FUSION_CONFIG_MAP)}")
        data = FUSION_CONFIG_MAP[config]().to_dict()
    elif isinstance(config, Mapping):
        data = AdapterFusionConfig.from_dict(config).to_dict()
    else:
        raise AdapterConfigError(f"an AdapterFusion config must be 'dynamic', 'static', a dict or an "
                                 f"AdapterFusionConfig, got {type(config).__name__}")
    return AdapterFusionConfig.from_dict({**data, **overrides})
