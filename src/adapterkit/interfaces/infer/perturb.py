"""The q/k/v layout of a fused projection where the attention computes its scores itself (no registry call to
read the value states from, not causal): found by changing the fused output in a forward and watching the
output projection's input. Zeroing the value part must zero it (attention is weights @ values); a change to
the first position's query part changes fewer positions there than the same change to its key part (a query
is one row of the weights, a key one column)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..base import FusedSlice


def _forward_with(model, fused: nn.Module, o: nn.Module, inputs: dict, edit) -> torch.Tensor | None:
    """The output projection's first input in a forward where `edit(out)` changes the fused output in place."""
    seen = []

    def change(module, args, output):
        if isinstance(output, torch.Tensor) and not seen:
            output = output.clone()
            edit(output)
            return output
        return None

    def keep(module, args):
        if args and isinstance(args[0], torch.Tensor) and not seen:
            seen.append(args[0].detach().clone())
    handles = [fused.register_forward_hook(change), o.register_forward_pre_hook(keep)]
    try:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            model(**inputs)
    except Exception:  # noqa: BLE001 - a model that does not take the change: no layout confirmed
        return None
    finally:
        for h in handles:
            h.remove()
    return seen[0] if seen else None


def _rows_changed(a: torch.Tensor, b: torch.Tensor) -> int:
    diff = (a.float() - b.float()).abs().amax(dim=-1).flatten(1)  # [batch, positions]
    return int((diff[0] > 1e-5 * (1 + float(b.float().abs().max()))).sum())


def perturbed_split(model, layer: nn.Module, fused_path: str, o_path: str | None, inputs: dict) -> dict:
    """q/k/v as contiguous slices [q | k | v] of `fused_path` (in `layer`), where the forward confirms it."""
    if o_path is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        return _split(model, layer, fused_path, o_path, inputs)
    finally:
        model.train(was_training)


def _split(model, layer, fused_path, o_path, inputs) -> dict:
    fused, o = layer.get_submodule(fused_path), layer.get_submodule(o_path)
    base = _forward_with(model, fused, o, inputs, lambda out: None)
    if base is None or base.dim() < 3 or not base.abs().any():
        return {}
    width, total = base.shape[-1], None
    probe = _forward_with(model, fused, o, inputs, lambda out: None)
    if probe is None or not torch.equal(probe, base):  # (a forward that is not deterministic)
        return {}

    def total_width(out):
        nonlocal total
        total = out.shape[-1]
    _forward_with(model, fused, o, inputs, total_width)
    if total is None or total <= width or (total - width) % 2:
        return {}
    kv = (total - width) // 2
    q_part, k_part, v_part = slice(0, width), slice(width, width + kv), slice(width + kv, total)

    def zero(part):
        def edit(out):
            out[..., part] = 0
        return edit

    def nudge(part):
        def edit(out):
            g = torch.Generator().manual_seed(0)
            out[:, :1, part] += torch.randn(out[:, :1, part].shape, generator=g).to(out.dtype)
        return edit
    out_zero = _forward_with(model, fused, o, inputs, zero(v_part))
    if out_zero is None or out_zero.abs().any():
        return {}
    by_q = _forward_with(model, fused, o, inputs, nudge(q_part))
    by_k = _forward_with(model, fused, o, inputs, nudge(k_part))
    if by_q is None or by_k is None or by_q.shape != base.shape or base[0, ..., 0].numel() < 2:
        return {}
    rows_q, rows_k = _rows_changed(by_q, base), _rows_changed(by_k, base)
    if not 0 < rows_q < rows_k:
        return {}
    sizes = None if kv == width else (width, kv, kv)
    return {m: FusedSlice(fused_path, i, sizes=sizes) for i, m in enumerate("qkv")}
