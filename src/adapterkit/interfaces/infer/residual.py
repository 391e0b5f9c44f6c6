"""The residual structure of a layer, read off the check forward's calls: which module's output h the layer adds
to which residual x (pre-LN, post-LN with the norm in the layer's forward, or parallel sublayers), or a BERT-style
output module computing `LN(dropout(dense(h)) + x)` itself."""

from __future__ import annotations

import inspect

import torch

from ..base import ResidualSite, SublayerSite
from .probe import Call


def close(a, b) -> bool:
    if a is None or b is None or a.shape != b.shape:
        return False
    return bool((a.float() - b.float()).abs().max() <= 1e-6 + 2e-5 * b.float().abs().max())


def _is_norm(module) -> bool:
    return "norm" in type(module).__name__.lower()


def post_ln_site(calls: list[Call], dense: str) -> ResidualSite | None:
    """A BERT-style output module around `dense` (its parent, taking (h, x)), checked by recomputing its output."""
    parent, _, leaf = dense.rpartition(".")
    if not parent:
        return None
    call = next((c for c in calls if c.path == parent), None)
    if call is None or len(call.args) < 2:
        return None
    module = call.module
    try:
        positional = [p for p in inspect.signature(type(module).forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    if len(positional) < 3:  # self, hidden_states, input_tensor
        return None
    children = dict(module.named_children())
    norms = [n for n, c in children.items() if _is_norm(c)]
    dropout = "dropout" if isinstance(children.get("dropout"), torch.nn.Dropout) else None
    norm = norms[0] if len(norms) == 1 else None
    try:
        with torch.no_grad():
            h = children[leaf](call.args[0]) + call.args[1]
            expected = children[norm](h) if norm else h
    except (RuntimeError, TypeError, KeyError):  # not a (hidden_states, input_tensor) module after all
        return None
    if not close(call.out, expected):
        return None
    return ResidualSite(parent, dense=leaf, dropout=dropout, layer_norm=norm)


def _tensors_after(calls: list[Call], layer_call: Call, after: int):
    """(tensor, the call that consumed it or None) observed after event `after`, earliest first."""
    seen = []
    for c in calls:
        if c.start > after:
            seen += [(c.start, c.inp, c)] + [(c.start, a, c) for a in c.args[1:]]
        if c.end > after and c.start < after:
            seen.append((c.end, c.out, None))
    seen.append((layer_call.end, layer_call.out, None))
    return [(t, c) for _, t, c in sorted(seen, key=lambda s: s[0]) if t is not None]


def sublayer_sites(calls: list[Call], cores: list[tuple[str, str]]) -> tuple[dict, str | None]:
    """location -> SublayerSite for `cores` ((location, path of the sublayer's core module), in call order).

    Returns (sites, why not) where the structure could not be confirmed."""
    layer_call = next(c for c in calls if c.path == "")
    x_shape = layer_call.out.shape if layer_call.out is not None else None
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.path] = counts.get(c.path, 0) + 1
    first = {}
    for location, path in cores:
        call = next((c for c in calls if c.path == path), None)
        if call is None:
            return {}, f"{path} does not run in the check forward"
        first[location] = call
    order = sorted(cores, key=lambda lc: first[lc[0]].start)
    scale = float(layer_call.out.float().abs().max()) if layer_call.out is not None else 1.0
    inner = [c for c in calls if c.path and c.out is not None and c.out.shape == x_shape
             and c.out.float().abs().max() > 1e-4 * scale]  # (an output of zeros would match anywhere)

    def outputs(i):
        core = first[order[i][0]]
        nxt = first[order[i + 1][0]].start if i + 1 < len(order) else layer_call.end
        prev = first[order[i - 1][0]].end if i else -1
        found = [c for c in inner if c.end >= core.end and c.end < nxt and c.start > prev
                 and (c.start <= core.start or c.start >= core.end)]
        return sorted(found, key=lambda c: (counts[c.path] > 1, -c.end))

    def residuals(before: int, after: int):
        return sorted((c for c in calls if c.path and after < c.start <= before and c.inp is not None),
                      key=lambda c: c.start)  # the outermost: the first call that reads x

    matches = []
    prev_end = -1
    for i, (location, _) in enumerate(order):
        hit = None
        core = first[location]
        for o in outputs(i):
            for r in residuals(min(o.start, core.start), prev_end):  # x is read before the sublayer starts
                if r.inp.shape != o.out.shape:
                    continue
                for t, consumer in _tensors_after(calls, layer_call, o.end):
                    if close(t, r.inp + o.out) and not close(t, r.inp):
                        if consumer is None:  # the sum leaves an enclosing module: is a norm applied to it next?
                            consumer = next((c for c in calls if c.start > o.end and _is_norm(c.module)
                                             and close(c.inp, t)), None)
                        hit = (o, r, consumer)
                        break
                if hit:
                    break
            if hit:
                break
        if hit is None:
            break
        matches.append(hit)
        prev_end = hit[0].end
    if len(matches) == len(order):
        sites = {}
        for i, ((location, _), (o, r, consumer)) in enumerate(zip(order, matches)):
            norm = None
            if consumer is not None and _is_norm(consumer.module):
                stream = matches[i + 1][1].inp if i + 1 < len(order) else layer_call.out
                if close(consumer.out, stream):
                    norm = consumer.path
            sites[location] = SublayerSite(output=o.path, residual=r.path, layer_norm=norm,
                                           residual_arg=r.inp_key or "hidden_states")
        return sites, None
    if len(order) == 2:  # parallel sublayers: x + attn(LN(x)) + mlp(LN(x))
        for o1 in outputs(0):
            for o2 in outputs(1):
                for r in residuals(o1.start, -1):
                    if r.inp.shape == o1.out.shape and close(layer_call.out, r.inp + o1.out + o2.out):
                        return {order[0][0]: SublayerSite(o1.path, r.path, residual_arg=r.inp_key or "hidden_states"),
                                order[1][0]: SublayerSite(o2.path, r.path, residual_arg=r.inp_key or "hidden_states")
                                }, None
    missing = order[len(matches)] if len(matches) < len(order) else order[0]
    return {}, (f"no residual add of the output of {missing[1]} (or a module after it) was found in the check "
                "forward (a layer scale or another non-module step?)")
