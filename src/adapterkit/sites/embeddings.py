"""The embedding site: invertible adapters after the embeddings and, inverted, before the LM heads."""

from __future__ import annotations

import torch.nn as nn

from ..compose import invertible as compose_invertible
from ..utils import find_submodule
from .base import Site, register_site_kind


class EmbeddingSite(Site):
    """The invertible adapter of the first active adapter: forward on the embeddings, inverse before LM heads
    (its protocol: `module(x, rev=False)`).

    `tap="output"` transforms the embeddings module's output, `"input"` its first input (T5: the encoder's
    first block, after the embedding dropout, as the `adapters` package do).
    """

    def __init__(self, state, key, embeddings: nn.Module, lm_heads: list[nn.Module], tap: str = "output"):
        super().__init__(state, key)
        self.embeddings = embeddings
        self.lm_heads = lm_heads
        self.tap = tap
        self._handles: list = []

    def compile(self, state, setup, leaf):
        return compose_invertible.invertible_plan(setup, leaf)

    def collect(self, names: list[str]) -> tuple:
        # As the `adapters` package: only the first adapter of the setup contributes its invertible adapter.
        return super().collect(names[:1])

    def install(self) -> None:
        if self.tap == "input":
            self._handles = [self.embeddings.register_forward_pre_hook(self._forward_input, with_kwargs=True)]
        else:
            self._handles = [self.embeddings.register_forward_hook(self._forward)]
        self._handles += [head.register_forward_pre_hook(self._inverse, with_kwargs=True) for head in self.lm_heads]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward(self, module, args, output):
        modules = self.state.active_at(self.key)
        return compose_invertible.apply(modules, output, rev=False) if modules else None

    def _forward_input(self, module, args, kwargs):
        modules = self.state.active_at(self.key)
        if not modules:
            return None
        if args:
            return (modules[0](args[0]),) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs, hidden_states=modules[0](kwargs["hidden_states"]))
        return args, kwargs

    def _inverse(self, module, args, kwargs):
        modules = self.state.active_at(self.key)
        if not modules or not (args or kwargs):
            return None
        if args:
            return (compose_invertible.apply(modules, args[0], rev=True),) + tuple(args[1:]), kwargs
        key = next(iter(kwargs))  # (a head called by keyword: its hidden states come first)
        return args, {**kwargs, key: compose_invertible.apply(modules, kwargs[key], rev=True)}


def _invertible_site(state, key, target) -> Site:
    interface = state.interface
    found = [find_submodule(state.model, h) for h in interface.lm_heads]  # (dotted: an EncoderDecoderModel's
    heads = [h for h in found if isinstance(h, nn.Module)]                # decoder.cls)
    return EmbeddingSite(state, key, state.embeddings_module(), heads, interface.embeddings_tap)


register_site_kind("invertible", _invertible_site)
