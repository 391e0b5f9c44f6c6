"""The declarative description of an architecture: where adapters attach, as module paths.

One small `ModelInterface` per architecture; methods read it and never look at model code. Paths are dotted
attribute paths: `layers` and `embeddings` relative to the base model (`model.base_model`), the per-layer entries
relative to one layer module. In a path, an integer part indexes a ModuleList (`layer.-1` is the last sublayer),
`a|b` takes the first alternative that exists, and a trailing `?` marks a path that may be missing from the model
altogether (e.g. the decoder stack of an encoder-only T5). A per-layer path that exists in some layers only (the
cross-attention of encoder-decoder models) attaches where it exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Union

import torch.nn as nn

from ..errors import AdapterError
from ..utils import find_submodule

ATTN_KEYS = ("q", "k", "v", "o")


@dataclass(frozen=True)
class ResidualSite:
    """A post-LN output module where a bottleneck adapter sits (BERT's `BertSelfOutput` / `BertOutput`).

    `module` computes `layer_norm(dropout(dense(h)) + x)` from `(h, x)`; the adapter runs between the dropout and
    the layer norm, with `x` as the residual. `layer_norm=None`: the module only adds the residual (ViT 4.x).
    """

    module: str
    dense: str = "dense"
    dropout: str | None = "dropout"
    layer_norm: str | None = "LayerNorm"
    kind: str = "post_ln"

    @property
    def anchor(self) -> str:
        """The path whose presence in a layer means the site exists there."""
        return self.module


@dataclass(frozen=True)
class SublayerSite:
    """A sublayer whose residual add happens in the layer's own forward: pre-LN layers (GPT-2, Llama, T5, ViT)
    and post-LN layers that add inline (DistilBERT's `sa_layer_norm(attn_out + x)`, BART).

    - `output`: the module whose output (or the first element of its output tuple) is the sublayer output h,
      taken where the layer adds it to the residual (after the sublayer's dropout when that is a module).
    - `residual`: the module whose input (positional argument 0 or keyword `residual_arg`) is the residual x.
    - `layer_norm`: post-LN layers only, the norm the layer applies to `h + x`; None for pre-LN layers.
    - `guard`: a path that must also exist in a layer for the site to exist there (T5's cross-attention
      sublayer and its FFN sublayer share module names).
    """

    output: str
    residual: str
    layer_norm: str | None = None
    residual_arg: str = "hidden_states"
    guard: str | None = None
    kind: str = "sublayer"

    @property
    def anchor(self) -> str:
        return self.output


@dataclass(frozen=True)
class FusedSlice:
    """Part `index` of a fused projection's output split into `parts` (GPT-2's `c_attn` = [q | k | v]).

    `per_head`: the config attribute holding the head count when the parts are interleaved per head
    (DeBERTa's `in_proj`: [q_0 k_0 v_0 q_1 k_1 v_1 ...]), or the count itself where the model's code fixes it
    (CodeGen's 4 groups); None when they are contiguous blocks.
    `sizes`: the parts' widths where they differ (a grouped-query [q | k | v]); None: equal parts.
    `grouped`: a grouped-query [q | k | v] whose widths come from the config, so that one named interface fits
    every checkpoint: the config attribute of the key/value head count (or the count itself: 1 for multi-query).
    The widths are (heads, kv heads, kv heads) x head_dim; `ModelInterface.for_config` turns them into `sizes`.
    With `per_head` too, the parts are interleaved per key/value group instead (Falcon's new decoder
    architecture: [q_0.. k_0 v_0 | q_1.. k_1 v_1 | ...]); `sizes` are then one group's widths, and `per_head`
    names the group count.
    """

    module: str
    index: int
    parts: int = 3
    per_head: str | int | None = None
    sizes: tuple[int, ...] | None = None
    grouped: str | int | None = None

    def for_config(self, config) -> "FusedSlice":
        """This slice with `grouped` resolved into `sizes` for `config` (unchanged without `grouped`)."""
        if self.grouped is None:
            return self
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = getattr(text, "num_attention_heads", None)
        kv = self.grouped if isinstance(self.grouped, int) else getattr(text, self.grouped, None) or heads
        head_dim = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None)
        if not heads or not head_dim or heads % kv:
            raise AdapterError(f"the fused projection {self.module!r} is split by head counts, but "
                               f"{type(config).__name__} has no num_attention_heads / head_dim (or the key/value "
                               f"heads {kv} do not divide the {heads} heads)")
        q = (heads // kv if self.per_head else heads) * head_dim  # one group's queries, or all of them
        k = head_dim if self.per_head else kv * head_dim
        return replace(self, grouped=None, sizes=(q, k, k))


@dataclass(frozen=True)
class OwnAttention:
    """An attention module that computes its scores itself instead of calling transformers' attention registry
    (DeBERTa's disentangled attention), described so prefix tuning still reaches it through hooks.

    - `kind`: how keys and values come about (a registered kind, sites/own_attention.py): "separate" (key and
      value projections of their own, DeBERTa-v2) or "fused_per_head" (one projection whose output is split per
      head into [q k v], DeBERTa).
    - `key` / `value`: the projections (paths relative to the attention module); for "fused_per_head", `key` is
      the fused projection and `value_bias` the parameter the module adds to the values after it (prefix values
      are taken as they are, so they get it subtracted first).
    - `bias_method`: the module's method computing a relative-position bias from (query, key, ...): it sees the
      real keys only, and its result is zero over the prefix (the `adapters` package's semantics).
    - kind "rows" (interfaces/prefix_rows.py; found and checked by the automatic interface): the module's call
      gets extra rows. `hidden` / `mask`: its parameters holding the attention input and mask; `rows`: other
      parameters shaped like the input; `biases`: additive biases over keys (zero over the prefix); `slices`: the
      (key, value) parts of a fused projection `key` (None: separate `key` and `value` projections);
      `mask_attend`: what a boolean mask holds where a key is seen (False: MPT's masked_fill(mask)); None: True
      (and, for another mask, its largest entry: additive or 0/1).
    - `paths`: the alternatives of the interface's `self_attention` path this applies to, where layer stacks
      differ (BLIP's text layers compute attention themselves, its vision layers call the registry); (): all.
    """

    kind: str
    key: str
    value: str | None = None
    value_bias: str | None = None
    bias_method: str | None = None
    hidden: str = "hidden_states"
    mask: str | None = None
    rows: tuple[str, ...] = ()
    biases: tuple[str, ...] = ()
    slices: tuple[FusedSlice, FusedSlice] | None = None
    mask_attend: bool | None = None
    paths: tuple[str, ...] = ()


ProjectionSpec = Union[str, FusedSlice]  # a module path, or a slice of a fused one
# (a tuple: one site spec per layer stack, each layer taking the first present in it (a two-tower model whose
# towers differ, e.g. AltCLIP's post-LN text and pre-LN vision layers)
ResidualSpec = Union[ResidualSite, SublayerSite, tuple]


@dataclass(frozen=True)
class TaskHead:
    """How a transformers task model's own head maps onto a flexible head (`adapterkit.heads`).

    `head_type` and `config` give the flexible head (e.g. 1 layer, no activation, pooled output); `weights` maps
    a module or parameter path of the task model (outside the base model) to its place in the flexible head
    (`"classifier": "1"` renames `classifier.weight` to `1.weight`). Used to convert task-model checkpoints.
    """

    head_type: str
    config: Mapping[str, Any]
    weights: Mapping[str, str]


@dataclass(frozen=True)
class ModelInterface:
    """Where everything is in one architecture.

    - `embeddings`: module whose output (`embeddings_tap="output"`) or first input (`"input"`) the invertible
      adapter transforms, relative to the base model.
    - `layers`: the layer list(s), relative to the base model; several stacks (encoder, decoder) are numbered
      one after the other, as the `adapters` package do.
    - `attention`: projection name ("q", "k", "v", "o") -> path of its linear (or a `FusedSlice`) in a layer.
    - `cross_attention_projections`: the same for the cross-attention of encoder-decoder layers.
    - `intermediate` / `output`: paths of the FFN input projections (up and gate) and output projections (down).
    - `residual_sites`: bottleneck location ("mh_adapter", "output_adapter", "cross_adapter") -> site spec.
    - `self_attention` / `cross_attention`: the attention modules of a layer (for prefix tuning).
    - `encoder_layers`: the stack (one of `layers`) that is the encoder of an encoder-decoder model: prefix tuning
      gives its self-attention its own prefix module (`encoder_prefix`), as it does the cross-attention
      (`cross_prefix`); every other self-attention shares one.
    - `lm_heads`: attribute names on a task model of LM heads, before which an invertible adapter is inverted.
    - `task_heads`: task-model class name (`config.architectures[0]`) -> `TaskHead`, for head conversion.
    - `adapterhub_layers` / `adapterhub`: how AdapterHub checkpoints name the layer list(s) and, per location,
      the module holding the adapter within a layer, where that differs from the paths above; also
      "self_attention" / "cross_attention" (where prefix gates sit), "invertible" (the invertible adapters'
      module, relative to the base model) and "prefix" (the `adapters` pool's name of the self-attention prefix
      group where it is not "self_prefix"; or, for "prefix" / "prefix_encoder" / "prefix_cross", the whole path
      of the group, with `{name}`, where the package keeps several pools: an EncoderDecoderModel's), and
      "cross_adapter_from": "mh_adapter" where the package's mh_adapter also adapts the cross-attention.
    - `adapterhub_differs`: location -> why its AdapterHub namesake is another function (Llama: the `adapters`
      package's "intermediate" LoRA sits on down_proj); AdapterHub imports and exports refuse adapters there,
      giving that reason. (T5's prefix tuning, whose package form shifts the relative positions, converts with
      `shift_positions`: see `position_bias`.)
    """

    model_types: tuple[str, ...]
    embeddings: str
    layers: Union[str, tuple[str, ...]]
    attention: Mapping[str, ProjectionSpec]
    intermediate: tuple[str, ...]
    output: tuple[str, ...]
    residual_sites: Mapping[str, ResidualSpec]
    self_attention: str | None = None
    cross_attention: str | None = None
    encoder_layers: str | None = None
    cross_attention_projections: Mapping[str, ProjectionSpec] = field(default_factory=dict)
    lm_heads: tuple[str, ...] = field(default_factory=tuple)
    task_heads: Mapping[str, TaskHead] = field(default_factory=dict)
    # False where the model's attention does not call transformers' ALL_ATTENTION_FUNCTIONS (prefix tuning needs it)
    attention_registry: bool = True
    # where attention_registry is False: how prefix tuning reaches the module's own attention code (None: refused)
    own_attention: OwnAttention | None = None
    # keyword arguments of the attention function that add a bias over keys (T5's position_bias): prefix tuning
    # pads them with zeros for the prefix positions
    attention_bias_kwargs: tuple[str, ...] = ()
    # the attention module's method computing a relative position bias from (query_length, key_length) (T5's
    # compute_bias): prefix tuning with `shift_positions` calls it with key_length + prefix_length
    position_bias: str | None = None
    embeddings_tap: str = "output"
    adapterhub_layers: Union[str, tuple[str, ...], None] = None
    adapterhub: Mapping[str, str] = field(default_factory=dict)
    adapterhub_differs: Mapping[str, str] = field(default_factory=dict)
    # piece (a residual location, "attn_q", "intermediate", "self_attention", ...) -> why it is not described
    # (an inferred interface leaves out what it could not confirm); methods needing it are refused with that reason
    unresolved: Mapping[str, str] = field(default_factory=dict)
    # the layers' width where the model config has no hidden_size / d_model (a two-tower model's first tower)
    hidden_size: int | None = None
    # (key/value heads, head dim) of the attention states, where measured (inference); else read from the config
    attention_shape: tuple[int, int] | None = None
    # layouts that depend on the checkpoint's config: (condition, {field: value}), applied in order where the
    # condition holds; a condition is a config attribute, true when set and truthy ("not attr": falsy). Falcon's
    # new_decoder_architecture or multi_query change its fused query_key_value layout.
    variants: tuple[tuple[str, Mapping[str, Any]], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        if isinstance(self.adapterhub_layers, str):
            object.__setattr__(self, "adapterhub_layers", (self.adapterhub_layers,))
        for name in ("intermediate", "output", "lm_heads"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
        if self.embeddings_tap not in ("output", "input"):
            raise ValueError(f"embeddings_tap={self.embeddings_tap!r}; allowed: 'output', 'input'")
        unknown = set(self.attention) - set(ATTN_KEYS) | set(self.cross_attention_projections) - set(ATTN_KEYS)
        if unknown:
            raise ValueError(f"unknown attention projection(s) {sorted(unknown)}; allowed: {list(ATTN_KEYS)}")

    def linear_locations(self, *, attn_matrices=(), intermediate: bool = False, output: bool = False,
                         strict: bool = True) -> list[tuple[str, ProjectionSpec]]:
        """(location key, projection) of the projections a LoRA-family config targets, in a fixed order.

        The attention matrices apply to self- and cross-attention alike (as the `adapters` package do). `strict`:
        a requested projection the interface marks unresolved is refused with its reason.
        """
        out: list[tuple[str, ProjectionSpec]] = []
        wanted = [f"attn_{m}" for m in attn_matrices if m not in self.attention]
        wanted += [g for g, on, paths in (("intermediate", intermediate, self.intermediate),
                                          ("output", output, self.output)) if on and not paths]
        if strict:
            self.refuse_unresolved(wanted)
        for prefix, projections in (("attn", self.attention), ("cross_attn", self.cross_attention_projections)):
            out += [(f"{prefix}_{m}", projections[m]) for m in ATTN_KEYS if m in attn_matrices and m in projections]
        for group, paths in (("intermediate", self.intermediate if intermediate else ()),
                             ("output", self.output if output else ())):
            out += [(group if i == 0 else f"{group}_{i}", p) for i, p in enumerate(paths)]
        return out

    def for_config(self, config) -> "ModelInterface":
        """The interface for one model: its `variants` applied for `config`, `grouped` fused slices sized."""
        out = self
        for condition, changes in self.variants:
            negate, attr = condition.startswith("not "), condition.removeprefix("not ").strip()
            unknown = set(changes) - {f.name for f in fields(self)}
            if unknown:
                raise ValueError(f"variant {condition!r} changes unknown interface field(s) {sorted(unknown)}")
            if bool(getattr(config, attr, None)) != negate:
                out = replace(out, **changes)
        if config is None:
            return out
        sized = {}
        for name in ("attention", "cross_attention_projections"):
            specs = getattr(out, name)
            if any(isinstance(v, FusedSlice) and v.grouped is not None for v in specs.values()):
                sized[name] = {k: v.for_config(config) if isinstance(v, FusedSlice) else v for k, v in specs.items()}
        return replace(out, **sized) if sized else out

    def for_model(self, model) -> "ModelInterface":
        """The interface for `model` where the registered one depends on more than the config (an
        EncoderDecoderModel's: composed from its two sides'); an AdapterError here falls back to inference."""
        return self

    def why_missing(self, piece: str) -> str:
        """' (why `piece` is not described)' where the interface says so, else ''."""
        reason = self.unresolved.get(piece)
        return f" ({piece}: {reason})" if reason else ""

    def refuse_unresolved(self, pieces) -> None:
        missing = [p for p in pieces if p in self.unresolved]
        if missing:
            raise AdapterError("the model's interface does not describe " + ", ".join(
                f"{p} ({self.unresolved[p]})" for p in missing) + "; pass init(model, interface=...) with it")

    def to_source(self) -> str:
        """Python source of this interface (`ModelInterface(...)`), to copy into a file and edit."""
        from .source import interface_source
        return interface_source(self)

    def all_linear_locations(self) -> list[tuple[str, ProjectionSpec]]:
        return self.linear_locations(attn_matrices=ATTN_KEYS, intermediate=True, output=True, strict=False)

    def hub_layers(self) -> tuple[str, ...]:
        return self.adapterhub_layers or self.layers  # type: ignore[return-value]

    def with_model_types(self, *model_types: str) -> "ModelInterface":
        """The same layout under other model types (RoBERTa, XLM-R and ELECTRA share BERT's)."""
        return replace(self, model_types=tuple(model_types))


def is_optional(path: str) -> bool:
    return path.endswith("?")


def resolve(root: nn.Module, path: str) -> nn.Module | None:
    """The module at `path` (first existing alternative of `a|b`), or None."""
    for alternative in path.rstrip("?").split("|"):
        module = find_submodule(root, alternative)
        if module is not None:
            return module
    return None


def site_in(layer: nn.Module | None, spec):
    """The site spec that applies in `layer`: `spec`, or the first of a per-stack tuple present there (None:
    none is; the first where no layer is given)."""
    if not isinstance(spec, tuple):
        return spec
    return spec[0] if layer is None else next((s for s in spec if present(layer, s) and all(
        resolve(layer, p) is not None for p in _site_paths(s))), None)


def _site_paths(spec) -> list[str]:
    """The module paths a site spec names within a layer (all must exist for it to apply there)."""
    if isinstance(spec, SublayerSite):
        return [p for p in (spec.output, spec.residual, spec.layer_norm) if p]
    return [spec.module] + [f"{spec.module}.{p}" for p in (spec.dense, spec.dropout, spec.layer_norm) if p]


def present(layer: nn.Module, spec) -> bool:
    """Whether a site spec or projection exists in this layer (cross-attention exists in decoder layers only)."""
    if isinstance(spec, tuple):
        return site_in(layer, spec) is not None
    if isinstance(spec, (ResidualSite, SublayerSite)):
        guard = getattr(spec, "guard", None)
        return resolve(layer, spec.anchor) is not None and (guard is None or resolve(layer, guard) is not None)
    return resolve(layer, spec.module if isinstance(spec, FusedSlice) else spec) is not None
