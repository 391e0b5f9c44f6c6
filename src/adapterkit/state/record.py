"""What one forward records and routes: gate values, fusion attentions (when asked for) and per-example routing.

Set by the model's forward hooks (forward_hooks.py) before the forward and cleared after it; gates and fusion
layers write into it, sites read the routing."""

from __future__ import annotations


class ForwardRecord:
    __slots__ = ("gating_scores", "fusion_attentions", "routing", "skip_layers")

    def __init__(self):
        # {adapter: {layer: {location: array}}} while a forward records gate values, else None
        self.gating_scores: dict | None = None
        # {fusion: {layer: {location: array}}} while a forward records fusion attentions, else None
        self.fusion_attentions: dict | None = None
        # the per-example routing of the running forward (compose/routing.py), or None
        self.routing = None
        # the running forward's `skip_layers=` (a frozenset), or None: the state's own (AdapterDrop, skip.py)
        self.skip_layers = None
