"""`average_head`: a new prediction head whose weights are the weighted sum of heads of one type and config
(the `adapters` package's `average_head`, its "linear" averaging).

Beyond the package: a dict `head_list` gives the weights (the package indexes it like a list and fails), a weight
count other than the head count is an error (the package's zip drops the extra ones), and parameters tied to the
input embeddings (an LM decoder on a tying config) stay tied rather than becoming a weighted copy.
"""

from __future__ import annotations

import torch

from ..blocks import named_weights
from ..errors import AdapterError
from .registry import build_head

_IGNORED = ("dropout_prob",)  # config keys the heads may differ in (as the package)


def _weights(items, weights, normalize: bool) -> tuple[list[str], list[float]]:
    return named_weights("average_head", "head_list", "heads", items, weights, normalize)


def _check_alike(heads: list) -> None:
    first = heads[0]
    signature = {k: v for k, v in first.config.items() if k not in _IGNORED}
    for head in heads[1:]:
        if type(head) is not type(first):
            raise AdapterError(f"average_head: {head.name!r} is a {head.config['head_type']} head and {first.name!r} "
                               f"a {first.config['head_type']} head; only heads of one type can be averaged")
        other = {k: v for k, v in head.config.items() if k not in _IGNORED}
        if other != signature:
            differ = sorted(k for k in signature.keys() | other.keys() if signature.get(k) != other.get(k))
            raise AdapterError(f"average_head: {head.name!r} has another config than {first.name!r} (they differ in "
                               f"{', '.join(differ)}); only heads of one config (up to {', '.join(_IGNORED)}) can "
                               "be averaged")
        shapes = {k: v.shape for k, v in head.state_dict().items()}
        if shapes != {k: v.shape for k, v in first.state_dict().items()}:
            raise AdapterError(f"average_head: {head.name!r} has other weight shapes than {first.name!r}")


@torch.no_grad()
def average_head(model, head_name: str, head_list, weights=None, normalize_weights: bool = True,
                 overwrite_ok: bool = False, set_active: bool = False) -> None:
    names, weights = _weights(head_list, weights, normalize_weights)
    heads = [model._require_head(name) for name in names]
    _check_alike(heads)
    if head_name in names:
        raise AdapterError(f"average_head: the new head {head_name!r} cannot be one of its sources")
    if head_name in model.heads and not overwrite_ok:
        raise AdapterError(f"a head named {head_name!r} already exists; pick another name, delete_head it first, "
                           "or pass overwrite_ok=True")
    tied = set(heads[0].tied_parameters())  # kept tied to the input embeddings, not averaged
    states = [h.state_dict() for h in heads]
    averaged = {}
    for key, value in states[0].items():
        if key not in tied:
            dtype = torch.promote_types(value.dtype, torch.float32)  # bf16 / fp16 heads summed in fp32
            averaged[key] = sum(w * state[key].to(dtype) for w, state in zip(weights, states)).to(value.dtype)
    head = build_head(head_name, heads[0].config, model.config)
    model.add_prediction_head(head, overwrite_ok=overwrite_ok, set_active=set_active)  # to the model's device
    missing, unexpected = head.load_state_dict(averaged, strict=False)
    assert set(missing) <= tied and not unexpected, (missing, unexpected)
