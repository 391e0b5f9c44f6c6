"""The declarative description of an architecture: where adapters attach, as module paths.

One small `ModelInterface` per architecture; methods read it and never look at model code. Paths are dotted
attribute paths: `layers` relative to the base model (`model.base_model`), the per-layer entries relative to
one layer module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class ResidualSite:
    """A sublayer output where a bottleneck adapter sits.

    kind "post_ln": `module` computes `layer_norm(dropout(dense(h)) + x)` from `(h, x)` (BERT-style output
    modules); the adapter runs between the dropout and the layer norm, with `x` as the residual.
    """

    module: str
    dense: str = "dense"
    dropout: str = "dropout"
    layer_norm: str = "LayerNorm"
    kind: str = "post_ln"


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

    - `embeddings`: module whose output the invertible adapter transforms (relative to the base model).
    - `layers`: the list of transformer layers (relative to the base model).
    - `attention`: projection name ("q", "k", "v", "o") -> path of its nn.Linear in a layer.
    - `intermediate` / `output`: paths of the FFN input and output projections in a layer.
    - `residual_sites`: bottleneck location ("mh_adapter", "output_adapter") -> `ResidualSite`.
    - `self_attention`: the self-attention module of a layer (for prefix tuning).
    - `lm_heads`: attribute names on a task model of LM heads, before which an invertible adapter is inverted.
    - `task_heads`: task-model class name (`config.architectures[0]`) -> `TaskHead`, for head conversion.
    """

    model_types: tuple[str, ...]
    embeddings: str
    layers: str
    attention: Mapping[str, str]
    intermediate: tuple[str, ...]
    output: tuple[str, ...]
    residual_sites: Mapping[str, ResidualSite]
    self_attention: str | None = None
    lm_heads: tuple[str, ...] = field(default_factory=tuple)
    task_heads: Mapping[str, TaskHead] = field(default_factory=dict)

    def linear_locations(self, *, attn_matrices=(), intermediate: bool = False, output: bool = False
                         ) -> list[tuple[str, str]]:
        """(location key, path) of the projections a LoRA-family config targets, in a fixed order."""
        out = [(f"attn_{m}", self.attention[m]) for m in ("q", "k", "v", "o") if m in attn_matrices]
        for group, paths in (("intermediate", self.intermediate if intermediate else ()),
                             ("output", self.output if output else ())):
            out += [(group if i == 0 else f"{group}_{i}", p) for i, p in enumerate(paths)]
        return out

    def with_model_types(self, *model_types: str) -> "ModelInterface":
        """The same layout under other model types (RoBERTa, XLM-R and ELECTRA share BERT's)."""
        return replace(self, model_types=tuple(model_types))
