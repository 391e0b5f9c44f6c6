"""AdapterFusion: configs, the fusion layer, the model API (mixed into every adapter model) and save/load."""

from .config import (AdapterFusionConfig, DynamicAdapterFusionConfig, StaticAdapterFusionConfig,
                     resolve_fusion_config)

__all__ = ["AdapterFusionConfig", "DynamicAdapterFusionConfig", "StaticAdapterFusionConfig", "resolve_fusion_config"]
