"""Composition at a residual site (bottleneck-type adapters and AdapterFusion): every block.

The modules here follow the residual protocol (no import of theirs): `pre(h, x, layer_norm[, query_before_ln])`,
`adapt(z, residual)`, `step`, `finish`, `finish_in_layer`, `is_parallel`.

The state threaded through a setup is the `adapters` package's (its BottleneckState): the running hidden states, the
sublayer input `x`, the adapter residual, the last up-projection (for Fuse) and the last adapter (whose
post-processing ends the site). The blocks follow the `adapters` package's compose_* functions, with three deliberate
differences:

- `Average` gives `sum_i w_i * output_i` (the `adapters` package divide that by N again); an adapter absent at this site
  counts as a zero adapter (its output is the residual).
- `BatchSplit` / `Parallel` give each row exactly what it gets alone: each child does its own pre-processing,
  and each row range ends with the post-processing of its own last adapter (the `adapters` package use the block's first
  and last adapter for all rows; the same thing when the children share a config).
- A child absent at this site leaves its rows / positions as a zero adapter would (the `adapters` package drop or
  misalign them).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from ..errors import AdapterError
from .routing import Routed
from .tree import (AverageNode, FuseNode, Leaf, RowSplit, SeqSplit, StackNode, compile_tree, first_module,
                   row_slices)


class BnState(NamedTuple):
    hidden: torch.Tensor
    x: torch.Tensor
    residual: torch.Tensor
    up: torch.Tensor | None
    last: object  # the last adapter, None, or [(start, stop, adapter or None), ...] after a row split


def run_residual(adapters: Sequence, h: torch.Tensor, x: torch.Tensor,
                 layer_norm: Callable | None, *, layer_adds_residual: bool = False) -> torch.Tensor:
    """A Stack of bottleneck adapters at one residual site; plain `LN(h + x)` when none is active.

    `layer_adds_residual`: the layer itself goes on to compute `h' + x` (and its norm, if any), so return the h'
    that makes this equal to the adapters' result (sublayer hooks of pre-LN and inline post-LN layers).
    """
    if not adapters:
        if layer_adds_residual:
            return h
        out = h + x
        return layer_norm(out) if layer_norm is not None else out
    out = h
    for adapter in adapters:
        out = adapter.step(out, x, layer_norm)
    if not layer_adds_residual:
        return adapters[-1].finish(out, h, x, layer_norm)
    return adapters[-1].finish_in_layer(out, h, x)


def residual_plan(state, site, setup, leaf):
    layer_id, location = site.key

    def fuse(block, kids):
        fusion = state.fusion(block.name)
        layer = fusion.layer_at(layer_id, location) if fusion is not None else None
        absent = [c for c, k in zip(block.children, kids) if k is None]
        if layer is None or absent:
            raise AdapterError(
                f"{block!r} cannot run at layer {layer_id} {location}: "
                + (f"adapter(s) {absent} have no module there" if absent else "the fusion has no layer there")
                + "; fuse adapters that share their layers and locations"
            )
        return FuseNode(kids, layer, _last_module(kids[-1]), block.name)

    return compile_tree(setup, leaf, fuse)


def run(plan, h: torch.Tensor, x: torch.Tensor, layer_norm: Callable | None, *,
        layer_adds_residual: bool = False) -> torch.Tensor:
    """The site's output for `plan`: a tuple (a Stack of names), a compiled tree, or per-example routing.

    `layer_adds_residual`: the layer computes `h' + x` (and its norm) itself after the site (sublayer hooks of
    pre-LN and inline post-LN layers): return that h' instead of the finished output."""
    if type(plan) is tuple:
        return run_residual(plan, h, x, layer_norm, layer_adds_residual=layer_adds_residual)
    if isinstance(plan, Routed):
        return plan.gather_run(lambda p, rows: run(p, h[rows], x[rows], layer_norm,
                                                   layer_adds_residual=layer_adds_residual))
    state = _compose(plan, BnState(h, x, x, None, None), layer_norm)
    return _post(state, h, x, layer_norm, layer_adds_residual)


def _last_module(node):
    if isinstance(node, Leaf):
        return node.module
    if isinstance(node, FuseNode):
        return node.last
    return _last_module(node.children[-1])


def _pre(module, st: BnState, layer_norm) -> BnState:
    z, residual, _ = module.pre(st.hidden, st.x, layer_norm)
    return st._replace(hidden=z, residual=residual)


def _single(module, st: BnState) -> BnState:
    out, up = module.adapt(st.hidden, st.residual)
    return st._replace(hidden=out, up=up, last=module)


def _child(node, st: BnState, layer_norm) -> BnState:
    """A child of Fuse / Split / Average: a name runs on the block's pre-processed state, a block composes."""
    return _single(node.module, st) if isinstance(node, Leaf) else _compose(node, st, layer_norm)


def _zero_output(first, st: BnState) -> torch.Tensor:
    """What an adapter with zero output weights would return here."""
    return torch.zeros_like(st.hidden) if first.is_parallel else st.residual


def _compose(node, st: BnState, layer_norm) -> BnState:
    if isinstance(node, Leaf):
        return _single(node.module, _pre(node.module, st, layer_norm))
    if isinstance(node, StackNode):
        for child in node.children:
            st = _compose(child, st, layer_norm)
        return st
    if isinstance(node, RowSplit):
        parts = []
        for rows, child in zip(row_slices(node, st.hidden.shape[0]), node.children):
            sub = _rows(st, rows)
            parts.append((rows, sub if child is None else _compose(child, sub, layer_norm)))
        return _concat_rows(parts)
    if isinstance(node, FuseNode):
        z, residual, query = node.last.pre(st.hidden, st.x, layer_norm, node.fusion.config.query_before_ln)
        st = st._replace(hidden=z, residual=residual)
        ups = torch.stack([_child(child, st, layer_norm).up for child in node.children], dim=2)
        return st._replace(hidden=node.fusion(query, ups, residual), last=node.last)
    first = first_module(node)
    st = _pre(first, st, layer_norm)
    if isinstance(node, AverageNode):
        total, absent, states = None, 0.0, []
        for weight, child in zip(node.weights, node.children):
            if child is None:
                absent += weight
                continue
            child_state = _child(child, st, layer_norm)
            states.append(child_state)
            total = child_state.hidden * weight if total is None else total + child_state.hidden * weight
        if absent:
            total = total + _zero_output(first, st) * absent
        return st._replace(hidden=total, residual=states[0].residual, up=states[0].up, last=states[-1].last)
    if isinstance(node, SeqSplit):
        length = st.hidden.shape[1]
        if sum(node.splits) != length:
            raise AdapterError(f"Split(splits={node.splits}) needs sequences of {sum(node.splits)} positions, "
                               f"got {length}")
        pieces, last, start = [], None, 0
        for size, child in zip(node.splits, node.children):
            cut = slice(start, start + size)
            start += size
            sub = BnState(st.hidden[:, cut], st.x[:, cut], st.residual[:, cut],
                          None if st.up is None else st.up[:, cut], None)
            if child is None:
                pieces.append(_zero_output(first, sub))
                continue
            child_state = _child(child, sub, layer_norm)
            pieces.append(child_state.hidden)
            last = child_state.last if child_state.last is not None else last
        return st._replace(hidden=torch.cat(pieces, dim=1), last=last)
    raise AdapterError(f"unknown composition node {type(node).__name__}")  # pragma: no cover


def _rows(st: BnState, rows: slice) -> BnState:
    last = st.last
    if isinstance(last, list):
        last = [(max(a, rows.start) - rows.start, min(b, rows.stop) - rows.start, m)
                for a, b, m in last if min(b, rows.stop) > max(a, rows.start)]
    return BnState(st.hidden[rows], st.x[rows], st.residual[rows], None if st.up is None else st.up[rows], last)


def _concat_rows(parts: list[tuple[slice, BnState]]) -> BnState:
    states = [s for _, s in parts]
    segments = []
    for rows, s in parts:
        if isinstance(s.last, list):
            segments += [(a + rows.start, b + rows.start, m) for a, b, m in s.last]
        elif rows.stop > rows.start:
            segments.append((rows.start, rows.stop, s.last))
    modules = {id(m) for _, _, m in segments}
    last = segments if len(modules) > 1 else segments[0][2] if segments else None
    ups = [s.up for s in states]
    return BnState(torch.cat([s.hidden for s in states]), torch.cat([s.x for s in states]),
                   torch.cat([s.residual for s in states]),
                   torch.cat(ups) if all(u is not None for u in ups) else None, last)


def _finish(module, hidden, h, x, layer_norm, in_layer: bool):
    if module is None:  # rows no adapter touched here: the plain sublayer
        if in_layer:
            return hidden
        out = hidden + x
        return layer_norm(out) if layer_norm is not None else out
    return module.finish_in_layer(hidden, h, x) if in_layer else module.finish(hidden, h, x, layer_norm)


def _post(st: BnState, h, x, layer_norm, in_layer: bool = False) -> torch.Tensor:
    if not isinstance(st.last, list):
        return _finish(st.last, st.hidden, h, x, layer_norm, in_layer)
    return torch.cat([_finish(m, st.hidden[a:b], h[a:b], x[a:b], layer_norm, in_layer) for a, b, m in st.last])
