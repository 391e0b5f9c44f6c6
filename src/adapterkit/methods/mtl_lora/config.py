"""MTL-LoRA's config: the `adapters` package's `MTLLoRAConfig` ("mtl_lora"), its LoRA fields plus the multi-task
ones (same names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...configs.base import AdapterConfig
from ...errors import AdapterConfigError

ATTN_MATRICES = ("q", "k", "v", "o")
MATRIX_TYPES = ("singular_values", "linear")


@dataclass(eq=False)
class MTLLoRAConfig(AdapterConfig):
    """MTL-LoRA (Yang et al., 2024): per task t, `h = W0 x + (alpha/r) sum_k w_tk B_k Lambda_t A x`.

    A (r, in) and the `n_up_projection` up-projections B_k (out, r) are what tasks share (`model.share_parameters`);
    each task (one adapter per task, in a `MultiTask` block) keeps its `Lambda_t` ("singular_values": a diagonal,
    ones at init; "linear": a full r x r matrix, the identity at init) and its mixing weights `w_t =
    softmax(weights_t / weights_sharpness)` (ones at init: an even mix). The targets (`attn_matrices`,
    `intermediate_lora`, `output_lora`, `leave_out`) are LoRA's. `init_weights`: "lora" (A Kaiming-uniform, the
    B_k zeros) or "bert" (all N(0, 0.02)). `use_gating`: a learned gate replaces alpha / r (not mergeable).
    """

    method: ClassVar[str] = "mtl_lora"

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: list = field(default_factory=list)
    r: int = 8
    alpha: float = 8
    dropout: float = 0.0
    attn_matrices: list = field(default_factory=lambda: ["q", "v"])
    composition_mode: str = "add"
    init_weights: str = "lora"
    use_gating: bool = False
    n_up_projection: int = 1
    task_specific_matrix_type: str = "singular_values"
    weights_sharpness: float = 0.05

    def validate(self) -> None:
        self._check_bool("selfattn_lora", "intermediate_lora", "output_lora", "use_gating")
        self._check_layer_list("leave_out")
        self._check_number("r", minimum=1, integer=True)
        self._check_number("alpha", minimum=0, exclusive_min=True)
        self._check_number("dropout", minimum=0.0, maximum=1.0, exclusive_max=True)
        self._check_names("attn_matrices", ATTN_MATRICES)
        self._check_str("composition_mode", ("add",))
        self._check_str("init_weights", ("lora", "bert"))
        self._check_number("n_up_projection", minimum=1, integer=True)
        self._check_str("task_specific_matrix_type", MATRIX_TYPES)
        self._check_number("weights_sharpness", minimum=0, exclusive_min=True)
        if not ((self.selfattn_lora and self.attn_matrices) or self.intermediate_lora or self.output_lora):
            raise AdapterConfigError(
                f"{type(self).__name__} targets no projection: enable selfattn_lora with attn_matrices, "
                "intermediate_lora or output_lora")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r
