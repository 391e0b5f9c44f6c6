"""Prefix tuning for an attention module that does not call the attention registry: describe its call for the
"rows" kind (interfaces/prefix_rows.py) and check it on the module itself, or say why not.

The check calls the module, as the check forward called it, with a 2-position prefix whose value is the same
vector v at both positions. For softmax attention over [prefix; real keys], every real row's context per head is
then alpha * v + (1 - alpha) * (its plain context) with 0 < alpha < 1: the real keys keep their relative weights,
the prefix is seen by every row. Anything else (sparse or approximate attention, convolutions over the sequence,
position encodings applied inside, keys from another sequence, a shape error) fails it, and prefix tuning is
refused with what failed.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from ..base import FusedSlice, OwnAttention, resolve
from .. import prefix_rows as pr

_HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads")


def _relative(path, base: str):
    """`path` (or its `a|b` alternative) relative to the module at `base`; None where it is not inside."""
    module = path.module if isinstance(path, FusedSlice) else path
    rel = next((a[len(base) + 1:] for a in module.split("|") if a.startswith(base + ".")), None)
    if rel is None:
        return None
    return FusedSlice(rel, path.index, path.parts, path.per_head, path.sizes) if isinstance(path, FusedSlice) else rel


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def describe(module: nn.Module, args, kwargs, attention: dict, path: str) -> OwnAttention | str:
    """The module's call as a "rows" OwnAttention, or why it cannot be one."""
    from transformers.cache_utils import Cache

    k, v = _relative(attention.get("k", ""), path), _relative(attention.get("v", ""), path)
    if k is None or v is None:
        return f"its key/value projections are not inside the attention module {path}"
    if isinstance(k, FusedSlice) != isinstance(v, FusedSlice) or isinstance(k, FusedSlice) and k.module != v.module:
        return "its keys and values come from different kinds of projections"
    names = pr.signature_names(module)
    if not names:
        return f"{type(module).__name__}.forward takes no named inputs"
    hidden_name = names[0]
    hidden = pr.get_arg(names, args, kwargs, hidden_name)
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not hidden.is_floating_point():
        return f"its first input {hidden_name!r} is not a (batch, sequence, width) tensor"
    length = hidden.shape[1]
    mask = next((n for n in names if n in pr.MASK_NAMES), None)
    rows, biases = [], []
    for name in names[1:]:
        value = pr.get_arg(names, args, kwargs, name)
        if value is None or isinstance(value, Cache) or name == mask:
            continue
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.shape == hidden.shape:
            rows.append(name)
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and value.shape[-1] == length and (
                value.dim() < 2 or value.shape[-2] in (1, length)):
            biases.append(name)
        elif any(length in t.shape[1:] for t in _tensors(value)):
            shapes = [tuple(t.shape) for t in _tensors(value)]
            return (f"it takes {name!r} {shapes}, which depends on the sequence positions (a position encoding "
                    "applied inside the attention): the prefix has no positions there")
    value = pr.get_arg(names, args, kwargs, mask) if mask else None
    # the mask's first entry (the first query and key of the unpadded check input) is "seen", in any convention:
    # a boolean mask records it where it is False (MPT); another must see where it is largest (additive, 0/1)
    attend = None
    if isinstance(value, torch.Tensor) and value.numel():
        first = value.reshape(-1)[0]
        if value.dtype == torch.bool:
            attend = None if bool(first) else False
        elif first.item() != value.max().item():
            return f"its attention mask {mask!r} does not hold its largest value where a key is seen"
    common = dict(hidden=hidden_name, mask=mask, rows=tuple(rows), biases=tuple(biases), mask_attend=attend)
    if isinstance(k, FusedSlice):
        return OwnAttention("rows", key=k.module, slices=(k, v), **common)
    return OwnAttention("rows", key=k, value=v, **common)


def shape(module: nn.Module, spec: OwnAttention, config, ctx_width: int) -> tuple[int, int, int] | str:
    """(query heads, key/value heads, head dim) from the config and the projections' widths."""
    heads = next((getattr(obj, a) for obj in (module, config) for a in _HEADS  # (the module's own first: towers)
                  if isinstance(getattr(obj, a, None), int)), None)
    if not heads or ctx_width % heads:
        return f"its head count is not in the config, or does not divide the attention width {ctx_width}"
    head_dim = ctx_width // heads
    projection = resolve(module, spec.key)
    width = getattr(projection, "out_features", None) or getattr(projection, "nf", None)  # (Conv1D: nf)
    if spec.slices:
        k = spec.slices[0]
        kv_width = k.sizes[k.index] if k.sizes else (width // k.parts if width else None)
    else:
        kv_width = width
    if kv_width is None or kv_width % head_dim or heads % (kv_width // head_dim):
        return f"its key width {kv_width} does not fit {heads} heads of {head_dim}"
    return heads, kv_width // head_dim, head_dim


def check(module: nn.Module, args, kwargs, spec: OwnAttention, dims, ctx_module: nn.Module | None) -> str | None:
    """None where the prefix rows give softmax attention over [prefix; keys] (see the module docstring)."""
    from transformers.cache_utils import Cache

    heads, kv, head_dim = dims
    names = pr.signature_names(module)
    args = tuple(None if isinstance(a, Cache) else a for a in args)  # (the check forward filled them)
    kwargs = {n: None if isinstance(a, Cache) else a for n, a in kwargs.items()}
    hidden = pr.get_arg(names, args, kwargs, spec.hidden)
    batch, length = hidden.shape[:2]
    n = 2
    g = torch.Generator().manual_seed(0)
    pk = torch.randn(batch, kv, n, head_dim, generator=g).to(hidden)
    pv = (2 * torch.randn(batch, kv, 1, head_dim, generator=g)).to(hidden).expand(batch, kv, n, head_dim)

    def run(prefixed: bool):
        seen, handles = [], []
        a, kw = args, kwargs
        if ctx_module is not None:
            handles.append(ctx_module.register_forward_pre_hook(lambda m, i: seen.append(i[0])))
        if prefixed:
            a, kw, _ = pr.widen_call(spec, names, args, kwargs, n)
            k_rows, v_rows = pr.flat_rows(pk), pr.flat_rows(pv)
            if spec.slices:
                hooks = [(spec.key, [(k_rows, spec.slices[0]), (v_rows, spec.slices[1])])]
            else:
                hooks = [(spec.key, [(k_rows, None)]), (spec.value, [(v_rows, None)])]
            for path, parts in hooks:
                handles.append(resolve(module, path).register_forward_hook(
                    lambda m, i, out, parts=parts: pr.place_rows(out, n, length, parts, kv)))
        try:
            with torch.no_grad():
                out = module(*a, **kw)
        finally:
            for h in handles:
                h.remove()
        if ctx_module is not None:
            ctx = seen[-1]
            return ctx[:, n:] if prefixed else ctx
        out = pr.drop_rows(out, n, length) if prefixed else out
        return out if isinstance(out, torch.Tensor) else out[0]

    try:
        plain, prefixed = run(False), run(True)
    except Exception as e:  # noqa: BLE001 - any failure with the prefix rows means: not this kind
        return f"the attention call with prefix rows fails ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    if plain.shape != (batch, length, heads * head_dim) or prefixed.shape != plain.shape:
        return f"its attention context is {tuple(plain.shape)}, not (batch, {length}, {heads * head_dim})"
    c0 = plain.view(batch, length, heads, head_dim).double()
    c1 = prefixed.view(batch, length, heads, head_dim).double()
    value = pv[:, :, 0].double().repeat_interleave(heads // kv, dim=1)[:, None]  # (batch, 1, heads, head_dim)
    d, u = c1 - c0, value - c0
    alpha = (d * u).sum(-1) / (u * u).sum(-1)
    residual = (d - alpha[..., None] * u).abs().max()
    if not residual <= 1e-4 * (1 + u.abs().max()) or not (alpha.min() > 1e-6 and alpha.max() < 1):
        return ("with prefix rows its output is not softmax attention over [prefix; keys] (sparse, approximate or "
                "otherwise mixed attention)")
    return None


def infer_own_attention(model, inputs: dict, layers: list[nn.Module], path: str, attention: dict):
    """(OwnAttention, (key/value heads, head dim)) for the attention module at `path` of each layer in `layers`
    (one per stack), or (None, why not)."""
    modules = [resolve(layer, path) for layer in layers]
    if any(m is None for m in modules):
        return None, f"not every layer stack has an attention module at {path}"
    calls: dict = {}

    def keep(mod, args, kwargs):
        calls.setdefault(id(mod), (args, kwargs))

    handles = [m.register_forward_pre_hook(keep, with_kwargs=True) for m in modules]
    was_training = model.training
    model.eval()
    try:
        try:
            with torch.no_grad():
                model(**inputs)
        finally:
            for h in handles:
                h.remove()
        return _infer(model, modules, calls, path, attention)
    except Exception as e:  # noqa: BLE001 - a model that fails here gets no prefix tuning, with the reason
        return None, f"the check of its attention call failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    finally:
        model.train(was_training)


def _infer(model, modules, calls, path, attention):
    found = set()
    for module in modules:
        if id(module) not in calls:
            return None, f"the attention module {path} does not run in the check forward"
        args, kwargs = calls[id(module)]
        spec = describe(module, args, kwargs, attention, path)
        if isinstance(spec, str):
            return None, spec
        o = _relative(attention.get("o", ""), path) if attention.get("o") else None
        ctx_module = resolve(module, o) if isinstance(o, str) else None
        hidden = pr.get_arg(pr.signature_names(module), args, kwargs, spec.hidden)
        width = ctx_module.in_features if hasattr(ctx_module, "in_features") else (
            getattr(model.config, "hidden_size", None) or hidden.shape[-1])
        dims = shape(module, spec, model.config, width)
        if isinstance(dims, str):
            return None, dims
        why = check(module, args, kwargs, spec, dims, ctx_module)
        if why:
            return None, why
        found.add((spec, dims[1:]))
    if len(found) != 1:
        return None, f"the layer stacks' attention modules differ: {sorted(map(str, found))}"
    return next(iter(found))


def joined_self_attention(stacks, layers, unresolved: dict) -> str | None:
    """Where the stacks' attention modules sit at different paths: the paths as `a|b` alternatives, each stack's
    layer resolving its own (then prefix tuning decides per stack between the registry and own attention)."""
    paths = [s.self_module for s in stacks]
    if not all(paths) or len(set(paths)) < 2:
        return None
    joined = "|".join(dict.fromkeys(paths))
    if any(resolve(layer, joined) is not resolve(layer, p) for p, layer in zip(paths, layers)):
        return None
    unresolved.pop("self_attention", None)
    return joined


def stacks_own_attention(model, inputs: dict, stacks, layers, self_module: str, attention: dict, shapes: set):
    """`infer_own_attention` over the stacks whose attention does not call the registry; its `paths` name them
    where other stacks do."""
    own: dict = {}
    for st, layer in zip(stacks, layers):
        if not st.registry:
            own.setdefault(st.self_module, []).append(layer)
    found = set()
    for path, path_layers in own.items():
        spec, dims = infer_own_attention(model, inputs, path_layers, path, attention)
        if spec is None:
            return None, dims
        found.add((spec, dims))
    if len(found) != 1:
        return None, f"the layer stacks' attention modules differ: {sorted(map(str, found))}"
    (spec, dims), = found
    if shapes and shapes != {dims}:
        return None, f"the attention modules differ in (key/value heads, head dim): {sorted(shapes | {dims})}"
    registry = {st.self_module for st in stacks if st.registry}
    if registry & set(own):  # (a site decides by the path alternative it resolves)
        return None, f"stacks whose attention calls the registry and stacks whose does not share the path {path}"
    if registry:
        spec = replace(spec, paths=tuple(own))
    return spec, dims
