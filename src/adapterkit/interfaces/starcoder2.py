"""StarCoder2: pre-LN decoder (Llama-like attention) with a plain FFN `c_proj(act(c_fc(x)))`."""

from dataclasses import replace

from .llama import LLAMA
from .registry import register_interface

STARCODER2 = register_interface(replace(LLAMA, model_types=("starcoder2",), intermediate=("mlp.c_fc",),
                                        output=("mlp.c_proj",), adapterhub_differs={}))
