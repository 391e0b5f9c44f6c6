"""Qwen3-MoE: Qwen3's attention; the FFN of most layers a sparse MoE block (`mlp`: a router `gate` and fused
`experts` with 3D `gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I]), of the layers in `mlp_only_layers` a dense
gated MLP.

"intermediate" covers the up/gate projections and each expert's `gate_up_proj`, "output" the down projections and
each expert's `down_proj` (LoRA and (IA)^3 there are per expert: methods/lora/experts.py). The FFN sublayer's
output, where the output adapter sits, is the MoE block's (or the dense MLP's) output, before the residual add.
"""

from dataclasses import replace

from .llama import LLAMA
from .registry import register_interface

QWEN3_MOE = register_interface(replace(
    LLAMA, model_types=("qwen3_moe",),
    intermediate=("mlp.up_proj?", "mlp.gate_proj?", "mlp.experts.gate_up_proj?"),
    output=("mlp.down_proj?", "mlp.experts.down_proj?"),
    adapterhub_differs={loc: "the `adapters` package has no mixture-of-experts FFN (per-expert LoRA / (IA)^3 on "
                                  "fused expert weights)" for loc in ("intermediate", "output")},
))
