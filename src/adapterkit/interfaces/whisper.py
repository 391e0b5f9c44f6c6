"""Whisper: pre-LN encoder-decoder (mBART-like layers); the encoder reads audio features (conv1/conv2), so the
embedding site is the decoder's token embedding."""

from dataclasses import replace

from .mbart import MBART
from .registry import register_interface

WHISPER = register_interface(replace(MBART, model_types=("whisper",), embeddings="decoder.embed_tokens",
                                     lm_heads=("proj_out",),
                                     adapterhub={k: v for k, v in MBART.adapterhub.items() if k != "invertible"}))
