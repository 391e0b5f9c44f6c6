"""The layer-output site: representation edits (ReFT) on the hidden states a whole layer returns, after everything
inside the layer (its bottleneck adapters included). A forward hook on the interface's layer module: every call
of that module is one layer output, so a layer module the model calls several times (ALBERT shares one) is edited
at each call, and the edit cannot sit on a module the model never calls.

Its modules' protocol: `module(hidden, site, rows) -> hidden`, where `rows` is None (the whole batch) or the
batch rows (a LongTensor) `hidden` holds, for methods that read per-row inputs such as the attention mask.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..compose.routing import Routed
from ..compose.tree import row_segments
from .base import Site, register_site_kind


def _sub_rows(rows, part: slice, device) -> torch.Tensor:
    index = torch.arange(part.start, part.stop, device=device)
    return index if rows is None else rows[index]


class LayerOutputSite(Site):
    """Runs the active modules on a layer's output (the first element of a tuple output). Stack runs them in
    order; BatchSplit / Parallel / per-example routing run each on its rows."""

    def __init__(self, state, key, layer: nn.Module):
        super().__init__(state, key)
        self.layer = layer
        self.layer_id = key[0]
        self._handle = None

    def install(self) -> None:
        self._handle = self.layer.register_forward_hook(self._hook)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None

    def _hook(self, module, args, output):
        plan = self.state.active_at(self.key)
        if not plan:
            return None
        if isinstance(output, torch.Tensor):
            return self.run(plan, output, None)
        return (self.run(plan, output[0], None),) + tuple(output[1:])

    def run(self, plan, hidden: torch.Tensor, rows):
        if type(plan) is tuple:
            for module in plan:
                hidden = module(hidden, self, rows)
            return hidden
        if isinstance(plan, Routed):
            return plan.gather_run(lambda sub, sub_rows: self.run(sub, hidden[sub_rows],
                                                                  sub_rows if rows is None else rows[sub_rows]))
        segments = row_segments(plan, hidden.shape[0])
        if len(segments) == 1:
            return self.run(segments[0][1], hidden, rows)
        return torch.cat([self.run(modules, hidden[part], _sub_rows(rows, part, hidden.device))
                          for part, modules in segments])


def _layer_site(state, key, target) -> Site:
    return LayerOutputSite(state, key, state.layers[key[0]])


register_site_kind("layer_output", _layer_site)
