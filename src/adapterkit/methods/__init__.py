"""Method families; importing this package registers each one by its config `architecture`."""

from . import bottleneck, lora, prefix_tuning, union  # noqa: F401
from .base import Method, method_for, register_method

__all__ = ["Method", "method_for", "register_method"]
