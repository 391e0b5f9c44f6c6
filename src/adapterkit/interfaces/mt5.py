"""mT5: T5's layout (gated-GELU FFN by default)."""

from .registry import register_interface
from .t5 import T5

MT5 = register_interface(T5.with_model_types("mt5"))
