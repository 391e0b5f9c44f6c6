"""AdapterFusion modules: configs, the fusion layer and their container (the API: fusion_api.py; files: io/fusion.py)."""

from .config import (AdapterFusionConfig, DynamicAdapterFusionConfig, StaticAdapterFusionConfig,
                     resolve_fusion_config)

__all__ = ["AdapterFusionConfig", "DynamicAdapterFusionConfig", "StaticAdapterFusionConfig", "resolve_fusion_config"]
