"""The "prompt" site: vectors put into the input sequence (prompt tuning), by hooks around the call that takes
the token ids and on the embeddings. Its modules' protocol: `prompt_length`, `index` (where in the sequence the
vectors go), `insert_at` ("embeddings" / "inputs", below) and `prompt(batch, dtype)` -> (batch, P, d).

All inputs stay in the caller's coordinates (the real tokens only); the hooks translate them:
- The entry module (the model itself; an encoder-decoder's encoder) gets a forward pre-hook. On a step that
  starts a sequence (no cache, or an empty one) it makes room for the prompt: ones in `attention_mask`; with
  `insert_at="inputs"` also placeholder ids in `input_ids` (or the prompt itself in `inputs_embeds`), zeros in
  `token_type_ids`, and `position_ids` that count the prompt first; -100 in token-level `labels`, so the loss and
  last-token pooling (found from the ids) line up. On a later step with a cache (`generate()`), the cache already
  holds the prompt: only the mask gets its P ones and the positions their P offset.
- A forward hook on the embedding module puts the prompt vectors in the room made (once per armed call): the
  input embeddings ("inputs"), or the output of the interface's embedding module ("embeddings", the `adapters`
  package's placement: no position or token type embeddings for the prompt).
- An encoder-decoder's decoder gets a pre-hook that widens `encoder_attention_mask` by P where the encoder output
  is P longer (generate() runs the encoder on its own and passes the caller's mask to every step).
Outputs keep the prompt positions, as both reference packages do.
"""

from __future__ import annotations

import inspect

import torch

from ..errors import AdapterError
from ..utils import max_positions
from .base import Site, register_site_kind

KEY = ("model", "prompt")
IGNORE = -100
_CACHE_ARGS = ("cache", "past_key_values")
_ENCODER_MASKS = ("encoder_attention_mask", "encoder_padding_mask")


def _insert(tensor: torch.Tensor, index: int, piece: torch.Tensor) -> torch.Tensor:
    """`piece` put into `tensor` along dim 1 before position `index`."""
    return torch.cat([tensor[:, :index], piece, tensor[:, index:]], dim=1)


def _filled(tensor: torch.Tensor, length: int, value) -> torch.Tensor:
    return torch.full((tensor.shape[0], length) + tuple(tensor.shape[2:]), value, dtype=tensor.dtype,
                      device=tensor.device)


def _past_length(kwargs) -> int:
    for name in _CACHE_ARGS:
        cache = kwargs.get(name)
        if cache is not None and hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length())
        if isinstance(cache, (tuple, list)) and cache and cache[0] is not None:
            return int(cache[0][0].shape[-2])
    return 0


class PromptSite(Site):
    """The prompt's hooks (see the module docstring); one per model, shared by every prompt adapter."""

    def __init__(self, state, key, target=None):
        super().__init__(state, key)
        model = state.model
        self.encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        base = state.base
        self.encoder = base.get_encoder() if self.encoder_decoder else None
        self.decoder = base.get_decoder() if self.encoder_decoder else None
        self.entry = self.encoder if self.encoder_decoder else model
        source = self.encoder if self.encoder_decoder else model
        # (FSMT's encoder has no get_input_embeddings: the model's, which is the encoder's token embedding)
        getter = getattr(source, "get_input_embeddings", None) or model.get_input_embeddings
        self.input_embeddings = getter()
        self.max_positions = max_positions(model.config)
        self.labelled = not self.encoder_decoder
        self.placeholder = 1 if getattr(model.config, "pad_token_id", None) == 0 else 0
        self._armed = None  # (prompt module, expected sequence length) for the next embedding call
        self._handles: list = []

    def collect(self, names):
        found = super().collect(names)
        if len(found) > 1:
            raise AdapterError(f"the setup activates {len(found)} prompting adapters; one prompt per forward "
                               "is allowed ")
        return found

    def install(self) -> None:
        self._handles = [self.entry.register_forward_pre_hook(self._before, with_kwargs=True),
                         self.entry.register_forward_hook(self._disarm, always_call=True)]
        if self.decoder is not None:
            self._handles.append(self.decoder.register_forward_pre_hook(self._before_decoder, with_kwargs=True))
        embeddings = {id(self.input_embeddings): self.input_embeddings}
        if not self.encoder_decoder:
            module = self.state.embeddings_module()
            embeddings.setdefault(id(module), module)
        for module in embeddings.values():
            self._handles.append(module.register_forward_hook(self._fill))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- hooks ---------------------------------------------------------------------------------------
    def _active(self):
        if self.state.record.routing is not None:
            if any(self.state.module_at(n, KEY) is not None for n in self.state.configs):
                setups = self.state.record.routing.groups
                if any(self.state.plan_for(s).get(KEY) for s, _ in setups if s is not None):
                    raise AdapterError("prompt tuning cannot run in a mixed-adapter batch (adapter_names): the "
                                       "prompt changes the sequence length of every row; run it as the active setup")
            return None
        modules = self.state.active_at(KEY)
        return modules[0] if modules else None

    def _before(self, module, args, kwargs):
        prompt = self._active()
        if prompt is None:
            return None
        if args:  # arguments given by position: by name, so that each can be found and changed
            kwargs = dict(inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments)
            kwargs.update(kwargs.pop("kwargs", {}))
            args = ()
        kwargs = dict(kwargs)
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        reference = ids if ids is not None else embeds
        if reference is None:
            return None
        n, length, i = reference.shape[1], prompt.prompt_length, prompt.index
        past = 0 if self.encoder_decoder else _past_length(kwargs)
        inputs = prompt.insert_at == "inputs"
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise AdapterError(f"prompt tuning needs a 2D attention mask (batch, sequence); got shape "
                               f"{tuple(mask.shape)}")
        positions = kwargs.get("position_ids")
        if past > 0:  # the cache holds the prompt already: shift the caller's coordinates only
            if mask is not None and mask.shape[1] + length == past + n:
                kwargs["attention_mask"] = _insert(mask, i, _filled(mask, length, 1))
            if positions is not None and inputs:
                kwargs["position_ids"] = positions + length
            return args, kwargs
        total = n + length
        if self.max_positions is not None and total > self.max_positions and inputs:
            raise AdapterError(f"the input ({n} tokens) with the {length}-token prompt is {total} positions long; "
                               f"this model has {self.max_positions} positions")
        if mask is not None:
            kwargs["attention_mask"] = _insert(mask, i, _filled(mask, length, 1))
        labels = kwargs.get("labels") if self.labelled else None
        if labels is not None and labels.dim() >= 2 and labels.shape[1] == n:
            kwargs["labels"] = _insert(labels, i, _filled(labels, length, IGNORE))
        if inputs:
            if embeds is not None:
                kwargs["inputs_embeds"] = _insert(embeds, i, prompt.prompt(embeds.shape[0], embeds.dtype))
            else:
                kwargs["input_ids"] = _insert(ids, i, _filled(ids, length, self.placeholder))
                self._armed = (prompt, total)
            token_types = kwargs.get("token_type_ids")
            if token_types is not None:
                kwargs["token_type_ids"] = _insert(token_types, i, _filled(token_types, length, 0))
            if positions is not None:
                kwargs["position_ids"] = _prompt_positions(positions, i, length)
        else:
            self._armed = (prompt, n)
        return args, kwargs

    def _fill(self, module, args, output):
        armed = self._armed
        if armed is None or not isinstance(output, torch.Tensor) or output.dim() != 3:
            return None
        prompt, expected = armed
        inputs = prompt.insert_at == "inputs"
        if (module is not self.input_embeddings) == inputs or output.shape[1] != expected:
            return None
        self._armed = None
        piece = prompt.prompt(output.shape[0], output.dtype)
        i = prompt.index
        if inputs:
            return torch.cat([output[:, :i], piece, output[:, i + prompt.prompt_length:]], dim=1)
        return _insert(output, i, piece)

    def _disarm(self, module, args, output):
        armed, self._armed = self._armed, None
        if armed is not None and output is not None:  # the forward ran without the prompt going in
            raise AdapterError(
                f"prompt tuning could not put its prompt into {type(module).__name__}'s input: its embedding module "
                f"never ran on the {armed[1]} positions expected (the model changes the sequence length before "
                "embedding it: padding to an attention window, its own prefix tokens?)")

    def _before_decoder(self, module, args, kwargs):
        prompt = self._active()
        if prompt is None:
            return None
        if args:  # (FSMT passes the encoder states and mask by position)
            kwargs = dict(inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments)
            kwargs.update(kwargs.pop("kwargs", {}))
            args = ()
        name = next((n for n in _ENCODER_MASKS if kwargs.get(n) is not None), None)
        hidden, mask = kwargs.get("encoder_hidden_states"), kwargs.get(name) if name else None
        if hidden is None or mask is None or mask.dim() != 2:
            return None
        if hidden.shape[1] != mask.shape[1] + prompt.prompt_length:
            return None
        kwargs = dict(kwargs, **{name: _insert(mask, prompt.index, _filled(mask, prompt.prompt_length, 1))})
        return args, kwargs


def _prompt_positions(positions: torch.Tensor, index: int, length: int) -> torch.Tensor:
    """The caller's position ids with the prompt counted: prompt positions follow the tokens before it, every
    later token moves `length` on (what the model computes itself when given no position ids)."""
    start = positions[:, index - 1:index] + 1 if index > 0 else torch.zeros_like(positions[:, :1])
    steps = torch.arange(length, device=positions.device, dtype=positions.dtype).unsqueeze(0)
    return torch.cat([positions[:, :index], start + steps, positions[:, index:] + length], dim=1)


def _site(state, key, target) -> Site:
    return PromptSite(state, key, target)


register_site_kind("prompt", _site)
