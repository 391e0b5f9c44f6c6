"""The prompt: `prompt_length` vectors of the input-embedding width (the `adapters` package's `prompt_embedding`)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ...errors import AdapterConfigError
from .config import PromptTuningConfig


class PromptTuning(nn.Module):
    """Holds the prompt as `prompt_embedding.weight` (P, d), the package's name, so checkpoints map one to one.

    `index` is where the prompt goes in the sequence (0: "prefix", 1: "prefix_after_bos"); `insert_at` the
    resolved placement ("embeddings" / "inputs", see the config)."""

    def __init__(self, config: PromptTuningConfig, width: int, insert_at: str):
        super().__init__()
        self.prompt_length = config.prompt_length
        self.__dict__["index"] = 0 if config.combine == "prefix" else 1
        self.__dict__["insert_at"] = insert_at
        self.prompt_embedding = nn.Embedding(config.prompt_length, width)

    def prompt(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """(batch, P, d) in the model's dtype (a float32 prompt on a bf16 model is cast, its gradient stays fp32)."""
        return self.prompt_embedding.weight.to(dtype).unsqueeze(0).expand(batch, -1, -1)


def initial_weight(config: PromptTuningConfig, word_embeddings: nn.Module, model_config) -> torch.Tensor:
    """The starting prompt (float32): as the `adapters` package ("random_uniform", "from_string") or peft
    ("sample_vocab")."""
    weight = word_embeddings.weight
    length, width = config.prompt_length, weight.shape[1]
    if config.prompt_init == "random_uniform":
        out = torch.empty(length, width, dtype=torch.float32)
        return nn.init.uniform_(out, -config.random_uniform_scale, config.random_uniform_scale)
    if config.prompt_init == "sample_vocab":
        ids = torch.randint(0, weight.shape[0], (length,), dtype=torch.long)
    else:
        ids = torch.tensor(_text_ids(config, model_config, length), dtype=torch.long)
    with torch.no_grad():
        return word_embeddings(ids.to(weight.device)).detach().float().cpu().clone()


def _text_ids(config: PromptTuningConfig, model_config, length: int) -> list[int]:
    source = (config.tokenizer_name_or_path or getattr(model_config, "tokenizer_name_or_path", None)
              or getattr(model_config, "name_or_path", None))
    if not source:
        raise AdapterConfigError(
            "PromptTuningConfig(prompt_init='from_string') needs a tokenizer: set tokenizer_name_or_path (a local "
            "directory or hub name), or load the model with from_pretrained so its name_or_path names one")
    from transformers import AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:  # noqa: BLE001 - any loading failure is the same user error
        raise AdapterConfigError(f"PromptTuningConfig(prompt_init='from_string'): no tokenizer could be loaded "
                                 f"from {source!r} ({type(error).__name__}: {error})") from None
    ids = list(tokenizer(config.prompt_init_text)["input_ids"])
    if not ids:
        raise AdapterConfigError(f"PromptTuningConfig.prompt_init_text={config.prompt_init_text!r} has no tokens")
    ids = ids * math.ceil(length / len(ids))
    return ids[:length]
