"""Declarative architecture descriptions, one small file per architecture, registered by model_type."""

from .base import FusedSlice, ModelInterface, OwnAttention, ResidualSite, SublayerSite, TaskHead
from .registry import get_interface, register_interface, supported_model_types
from . import (bart, bert, deberta, deberta_v2, distilbert, electra, gpt2, llama, mistral, qwen2,  # noqa: F401
               roberta, t5, vit, xlm_roberta)  # (register built-ins)
from . import (albert, beit, bert_generation, clip, cohere, gemma2, gemma3_text, gptj, mbart, modernbert, mt5,  # noqa: F401
               olmo2, phi, plbart, qwen3, smollm3, starcoder2, whisper)
from . import codegen, falcon, gpt_neox, granite, moshi, phi3, stablelm, vitdet  # noqa: F401  (beyond `adapters`)
from . import encoder_decoder  # noqa: F401  (composed from its two sides)
from . import xmod  # noqa: F401  (the adapters package's X-MOD, without language adapters of its own)
from . import minicpm5_moe, mixtral, qwen3_moe  # noqa: F401  (mixture-of-experts decoders)

__all__ = ["ModelInterface", "ResidualSite", "SublayerSite", "FusedSlice", "TaskHead", "OwnAttention", "get_interface",
           "register_interface", "supported_model_types"]
