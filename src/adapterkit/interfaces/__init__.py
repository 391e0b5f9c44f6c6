"""Declarative architecture descriptions, one small file per architecture, registered by model_type."""

from .base import ModelInterface, ResidualSite, TaskHead
from .registry import get_interface, register_interface, supported_model_types
from . import bert, roberta  # noqa: F401  (register built-ins)

__all__ = ["ModelInterface", "ResidualSite", "TaskHead", "get_interface", "register_interface", "supported_model_types"]
