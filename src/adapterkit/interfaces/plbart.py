"""PLBart: BART's post-LN layer layout."""

from .bart import BART
from .registry import register_interface

PLBART = register_interface(BART.with_model_types("plbart"))
