"""Extra forward arguments on an adapter model, handled around the model's own forward.

Popped before the model sees them (its forward does not know them):
- `output_adapter_gating_scores=True`: gates record their values; the output gains `adapter_gating_scores`,
  `{adapter_name: {layer_id: {location: np.ndarray (batch, gate heads)}}}`.
- `output_adapter_fusion_attentions=True`: fusion layers record their attention; the output gains
  `adapter_fusion_attentions`, `{fusion_name: {layer_id: {location: np.ndarray (batch, seq, n_adapters)}}}`.
- `adapter_names=[...]`: one adapter name / setup (or None: the plain model) per row (compose/routing.py).
- `task_ids=...`: one task per row for a setup with a `MultiTask` block (compose/multitask.py); ignored otherwise.
- `skip_layers=[...]`: AdapterDrop for this forward, the layers whose adapters are left out (state/skip.py).
Tuple outputs get the dicts appended, gating scores first.

A setup with `Parallel` replicates the batch here, once per branch (branch-major: rows [i*B, (i+1)*B) are
branch i): every tensor argument whose first dimension is the batch size is repeated.
"""

from __future__ import annotations

import torch
from transformers.utils import ModelOutput

from .compose import multitask
from .compose.routing import Routing
from .errors import AdapterError
from .registry import before_forward

OUTPUT_GATING = "output_adapter_gating_scores"
OUTPUT_FUSION = "output_adapter_fusion_attentions"
ADAPTER_NAMES = "adapter_names"
SKIP_LAYERS = "skip_layers"
# what the hooks pop: generate() must not refuse them as unknown model arguments (model.py)
FORWARD_ARGUMENTS = (OUTPUT_GATING, OUTPUT_FUSION, ADAPTER_NAMES, multitask.TASK_IDS, SKIP_LAYERS)
# the per-row ones: generate() repeats them for beams and samples (generation.py)
ROW_ARGUMENTS = (ADAPTER_NAMES, multitask.TASK_IDS)
# tensor arguments whose first dimension is not the batch
_NOT_BATCHED = {"cache_position", "head_mask", "decoder_head_mask", "cross_attn_head_mask"}


def _batch_tensor(args, kwargs):
    for name in ("input_ids", "inputs_embeds", "pixel_values", "input_values", "input_features"):
        if isinstance(kwargs.get(name), torch.Tensor):
            return kwargs[name]
    return args[0] if args and isinstance(args[0], torch.Tensor) else None


def _reference(args, kwargs):
    """The tensor whose first dimension is the batch; an encoder-decoder's decoding step has only decoder inputs."""
    reference = _batch_tensor(args, kwargs)
    for name in ("decoder_input_ids", "decoder_inputs_embeds"):
        if reference is None and isinstance(kwargs.get(name), torch.Tensor):
            reference = kwargs[name]
    return reference


def _routing(state, names, reference) -> Routing:
    """A new routing, or inside generate() the previous step's when it routes the same rows the same way, or
    outside it a recent forward's with the same rows (a serving loop's or an eval loop's forwards)."""
    record = state.record
    rows, device = reference.shape[0], reference.device
    if record.generate_rows is not None:
        previous = record.generate_routing
        if previous is not None and previous.matches(names, rows, device):
            previous.freeze()
            return previous
        routing = record.generate_routing = Routing(state, names, rows, device)
        return routing
    key = _routing_key(names, rows, device)
    kept = state.plans.routings
    routing = kept.get(key) if key is not None else None
    if routing is None:
        routing = Routing(state, names, rows, device)
        if key is not None:
            while len(kept) >= state.plans.ROUTINGS_KEPT:
                kept.pop(next(iter(kept)))
            kept[key] = routing
    return routing


def _routing_key(names, rows, device) -> tuple | None:
    """A plain forward's routing key; None where a name is unhashable (that forward's routing is not kept)."""
    key = (tuple(names), rows, device) if isinstance(names, (list, tuple)) else None
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _route(state, args, kwargs, names, task_ids) -> list:
    """Set the record's per-row routing (`adapter_names`) and task ids for one forward; returns its setups."""
    record = state.record
    record.routing = record.task_ids = None
    if names is not None:
        reference = _reference(args, kwargs)
        if reference is None:
            raise AdapterError("adapter_names needs the batch as input_ids or inputs_embeds")
        record.routing = _routing(state, names, reference)
        setups = [setup for setup, _ in record.routing.groups]
    else:
        setups = [state.current_setup()]
    if any(multitask.blocks_in(s) for s in setups):  # task_ids without one are ignored, as by `adapters`
        reference = _reference(args, kwargs)
        if reference is None:
            raise AdapterError("task_ids needs the batch as input_ids or inputs_embeds")
        record.task_ids = multitask.task_ids_for(setups, task_ids, reference.shape[0], reference.device,
                                                 state.merged)
    return setups


def _replicate(args, kwargs, channels: int):
    reference = _batch_tensor(args, kwargs)
    if reference is None:
        return args, kwargs
    batch = reference.shape[0]

    def rep(value, name=None):
        if (isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch
                and name not in _NOT_BATCHED):
            return value.repeat(channels, *([1] * (value.dim() - 1)))
        return value
    return tuple(rep(a) for a in args), {k: rep(v, k) for k, v in kwargs.items()}


class ModelHooks:
    """The pre- and post-hook on the model's forward. An object (not closures over `state`), so that
    `copy.deepcopy(model)` gives hooks that act on the copy's state."""

    def __init__(self, state):
        self.state = state

    def before(self, module, args, kwargs):
        state = self.state
        record = state.record
        record.gating_scores = {} if kwargs.pop(OUTPUT_GATING, False) else None
        record.fusion_attentions = {} if kwargs.pop(OUTPUT_FUSION, False) else None
        names = kwargs.pop(ADAPTER_NAMES, None)
        task_ids = kwargs.pop(multitask.TASK_IDS, None)
        record.skip_layers = state.check_skip_layers(kwargs.pop(SKIP_LAYERS, None)) if SKIP_LAYERS in kwargs else None
        if names is None:
            setup = state.current_setup()
            channels = setup.parallel_channels if setup is not None else 1
            if channels > 1 and not multitask.blocks_in(setup):  # (task_ids_for refuses Parallel with MultiTask)
                args, kwargs = _replicate(args, kwargs, channels)
        setups = _route(state, args, kwargs, names, task_ids)
        record.inputs, record.scratch = (args, kwargs), {}
        names = set()
        for setup in setups:
            if setup is not None:
                names.update([setup] if isinstance(setup, str) else setup.flatten())
        before_forward(state, names)  # e.g. prefix MLPs run once here, outside every layer
        return args, kwargs

    def after(self, module, args, kwargs, output):
        record = self.state.record
        record.routing = record.inputs = record.task_ids = None
        record.scratch = {}
        record.skip_layers = None
        extras = []
        for key, value in (("adapter_gating_scores", record.gating_scores),
                           ("adapter_fusion_attentions", record.fusion_attentions)):
            if value is not None:
                extras.append((key, value))
        record.gating_scores = record.fusion_attentions = None
        if not extras:
            return None
        if isinstance(output, ModelOutput):
            for key, value in extras:
                output[key] = value
            return output
        if isinstance(output, tuple):
            return output + tuple(value for _, value in extras)
        return output


class EncoderHooks:
    """Keep the encoder's own inputs while it runs (encoder-decoder models): generate() calls the encoder outside
    the model's forward, so its attention mask is not among the model's inputs then. Run so, the encoder routes
    its rows itself: by its own `adapter_names` / `task_ids`, or by those generate() was given (generation.py),
    which generate() does not pass to an encoder whose signature lacks them."""

    def __init__(self, state):
        self.state = state
        self.routed = False

    def before(self, module, args, kwargs):
        record = self.state.record
        record.encoder_inputs = (args, kwargs)
        own = {key: kwargs.pop(key) for key in ROW_ARGUMENTS if key in kwargs}
        if record.inputs is not None:  # inside the model's forward: its hook routed the rows already
            return args, kwargs
        rows = {**(record.generate_rows or {}), **own}
        self.routed = any(value is not None for value in rows.values())
        if self.routed:
            _route(self.state, args, kwargs, rows.get(ADAPTER_NAMES), rows.get(multitask.TASK_IDS))
        return args, kwargs

    def after(self, module, args, kwargs, output):
        record = self.state.record
        record.encoder_inputs = None
        if self.routed:
            record.routing = record.task_ids = None
            self.routed = False


def install(model, state) -> None:
    hooks = ModelHooks(state)
    model.register_forward_pre_hook(hooks.before, with_kwargs=True)
    model.register_forward_hook(hooks.after, with_kwargs=True, always_call=True)
    get_encoder = getattr(model, "get_encoder", None)
    encoder = get_encoder() if state.interface.encoder_layers and callable(get_encoder) else None
    if isinstance(encoder, torch.nn.Module) and encoder is not model:
        encoder_hooks = EncoderHooks(state)
        encoder.register_forward_pre_hook(encoder_hooks.before, with_kwargs=True)
        encoder.register_forward_hook(encoder_hooks.after, with_kwargs=True, always_call=True)
