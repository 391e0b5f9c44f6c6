"""How a prompt-tuning config becomes its module (`shared.prompt`) and the model-level "prompt" site."""

from __future__ import annotations

import inspect

import torch.nn as nn

from ...errors import AdapterConfigError, AdapterError
from ...utils import max_positions
from .config import PromptTuningConfig
from .modules import PromptTuning, initial_weight


def reads_ids(module) -> bool:
    """Whether the interface's embedding module computes the embeddings from the token ids itself (BERT-style),
    without the attention mask (DeBERTa's multiplies by it, so its mask cannot be widened before it runs)."""
    params = inspect.signature(module.forward).parameters
    return "input_ids" in params and not {"mask", "attention_mask"} & set(params)


def _length_from_ids(model, words) -> bool:
    """Whether the model computes something from the ids' length outside the embedding module, so that a prompt
    put in after it would not match: rotary positions (GTE, ModernBERT), padding to an attention window
    (Longformer), or token embeddings narrower than the layers (MobileBERT's, projected up inside)."""
    width = getattr(model.config, "hidden_size", None)
    narrow = isinstance(width, int) and getattr(words, "weight", None) is not None and words.weight.shape[-1] != width
    rotary = any("rotary" in type(m).__name__.lower() for m in model.modules())
    return narrow or rotary or getattr(model.config, "attention_window", None) is not None


def placement(state, config: PromptTuningConfig) -> str:
    """`config.insert_at`, resolved on this model (None: the package's "embeddings" where it applies)."""
    encoder_decoder = bool(getattr(state.model.config, "is_encoder_decoder", False))
    module = state.embeddings_module()
    try:
        words = state.model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        words = None
    # (a token embedding that reads ids itself, e.g. BioGPT's scaled one, is the "inputs" placement)
    embeddings_ok = (not encoder_decoder and module is not words and reads_ids(module)
                     and not _length_from_ids(state.model, words))
    if config.insert_at is None:
        return "embeddings" if embeddings_ok else "inputs"
    if config.insert_at == "embeddings" and not embeddings_ok:
        raise AdapterConfigError(
            f"PromptTuningConfig(insert_at='embeddings') needs an embedding module that reads the token ids "
            f"(BERT-style encoders); {type(state.model).__name__} embeds tokens alone and adds positions later (or "
            "is an encoder-decoder), so its prompt goes among the input embeddings: use insert_at='inputs' or None")
    return config.insert_at


def build(state, name: str, config: PromptTuningConfig) -> None:
    try:
        words = getattr(state.model, "get_input_embeddings", lambda: None)()
    except NotImplementedError:  # (transformers' default for models with several inputs, e.g. CLIPModel)
        words = None
    if not isinstance(getattr(words, "weight", None), nn.Parameter) or words.weight.dim() != 2:
        raise AdapterError(f"{type(state.model).__name__} has no input embeddings (get_input_embeddings()); prompt "
                           "tuning needs a model that reads token ids")
    encoder = state.base.get_encoder() if getattr(state.model.config, "is_encoder_decoder", False) else None
    if encoder is not None and "input_ids" not in inspect.signature(encoder.forward).parameters:
        raise AdapterError(f"prompt tuning puts the prompt among the encoder's tokens; the encoder of "
                           f"{type(state.model).__name__} ({type(encoder).__name__}) reads "
                           f"{getattr(state.model, 'main_input_name', 'other inputs')}, not token ids")
    insert_at = placement(state, config)
    limit = max_positions(state.model.config)
    if insert_at == "inputs" and limit is not None and config.prompt_length >= limit:
        raise AdapterConfigError(
            f"PromptTuningConfig.prompt_length={config.prompt_length} leaves no room for tokens: "
            f"{type(state.model).__name__} has {limit} positions and the prompt takes {config.prompt_length} of them; "
            f"allowed: prompt_length < {limit}")
    module = PromptTuning(config, words.weight.shape[1], insert_at)
    module.prompt_embedding.weight.data = initial_weight(config, words, state.model.config)
    state.add_model_module(name, "prompt", module, site="prompt")
