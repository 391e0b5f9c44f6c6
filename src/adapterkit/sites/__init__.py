"""Attach points (base.py) and the built-in site kinds: projections, residual sites, the embeddings, attention."""

from . import attention, embeddings, experts, layer, own_attention, own_rows, prefix, projection, prompt, residual  # noqa: F401  (each registers its kinds)
from .attention import AttentionSite
from .base import PER_KIND, Site, make_site, register_residual_kind, register_site_kind
from .embeddings import EmbeddingSite
from .layer import LayerOutputSite
from .projection import ProjectionSite
from .residual import PostLNSite, SublayerHookSite

__all__ = ["PER_KIND", "Site", "make_site", "register_site_kind", "register_residual_kind", "ProjectionSite", "PostLNSite",
           "SublayerHookSite", "EmbeddingSite", "AttentionSite", "LayerOutputSite"]
