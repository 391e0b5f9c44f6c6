"""Prompt tuning config (Lester et al., 2021): `prompt_length` learned input vectors put before the sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ...configs.base import AdapterConfig
from ...errors import AdapterConfigError

INITS = ("random_uniform", "from_string", "sample_vocab")
COMBINES = ("prefix", "prefix_after_bos")
INSERTS = ("embeddings", "inputs")


@dataclass(eq=False)
class PromptTuningConfig(AdapterConfig):
    """The `adapters` package's fields and defaults, plus where the prompt enters (`insert_at`).

    - `prompt_init`: "random_uniform" (U(-random_uniform_scale, +scale)), "from_string" (the input embeddings of
      `prompt_init_text`'s tokens, repeated or cut to `prompt_length`; the tokenizer is `tokenizer_name_or_path`,
      else the model config's `tokenizer_name_or_path` or `name_or_path`) or "sample_vocab" (peft's: embeddings
      of random vocabulary ids).
    - `combine`: "prefix" (before the sequence) or "prefix_after_bos" (after its first token).
    - `insert_at`: "embeddings" puts the prompt after the model's embedding module (word + position + token type
      embeddings and their norm), as the `adapters` package does: the prompt vectors enter the first layer as they
      are. "inputs" puts it among the input embeddings, before the model adds positions, as peft does (and as a
      decoder's cache and position ids need). None (the default): "embeddings" where the embedding module reads
      the token ids itself (BERT-style encoders, where the package runs), else "inputs" (decoders,
      encoder-decoders: the package refuses those).
    """

    method: ClassVar[str] = "prompt_tuning"

    prompt_length: int = 10
    prompt_init: str = "random_uniform"
    prompt_init_text: Optional[str] = None
    random_uniform_scale: float = 0.5
    combine: str = "prefix"
    insert_at: Optional[str] = None
    tokenizer_name_or_path: Optional[str] = None

    def validate(self) -> None:
        self._check_number("prompt_length", minimum=1, integer=True)
        self._check_str("prompt_init", INITS)
        self._check_number("random_uniform_scale", minimum=0.0)
        self._check_str("combine", COMBINES)
        if self.insert_at is not None:
            self._check_str("insert_at", INSERTS)
        for name in ("prompt_init_text", "tokenizer_name_or_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise AdapterConfigError(f"PromptTuningConfig.{name}={value!r} must be None or a string")
            if value is not None and self.prompt_init != "from_string":
                raise AdapterConfigError(f"PromptTuningConfig.{name} is for prompt_init='from_string' (the text "
                                         f"whose token embeddings start the prompt), not {self.prompt_init!r}")
        if self.prompt_init == "from_string" and not self.prompt_init_text:
            raise AdapterConfigError("PromptTuningConfig(prompt_init='from_string') needs prompt_init_text (the text "
                                     "whose token embeddings start the prompt); or use prompt_init='random_uniform'")
