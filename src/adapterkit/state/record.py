"""What one forward records and routes: gate values, fusion attentions (when asked for) and per-example routing.

Set by the model's forward hooks (forward_hooks.py) before the forward and cleared after it; gates and fusion
layers write into it, sites read the routing."""

from __future__ import annotations


class ForwardRecord:
    __slots__ = ("gating_scores", "fusion_attentions", "routing", "inputs", "encoder_inputs", "scratch", "task_ids",
                 "skip_layers", "generate_rows", "generate_routing")

    def __init__(self):
        # {adapter: {layer: {location: array}}} while a forward records gate values, else None
        self.gating_scores: dict | None = None
        # {fusion: {layer: {location: array}}} while a forward records fusion attentions, else None
        self.fusion_attentions: dict | None = None
        # the per-example routing of the running forward (compose/routing.py), or None
        self.routing = None
        # the running forward's (args, kwargs), for methods that read its masks (ReFT's positions), else None
        self.inputs = None
        # the same for the encoder of an encoder-decoder model: generate() calls it outside the model's forward
        self.encoder_inputs = None
        # per-forward values a method's before_forward computes for its modules (method name -> value)
        self.scratch: dict = {}
        # the running forward's task ids (a LongTensor, one per row) when its setup has a MultiTask, else None
        self.task_ids = None
        # the running forward's `skip_layers=` (a frozenset), or None: the state's own (AdapterDrop, skip.py)
        self.skip_layers = None
        # while generate() runs: its per-row arguments ({"adapter_names": [...], ...}) for an encoder it runs
        # outside the model's forward (generation.py), else None
        self.generate_rows = None
        # while generate() runs: the routing of its last forward, reused by the next while the rows are the same
        # (compose/routing.py, `Routing.frozen`), else None
        self.generate_routing = None
