"""MiniCPM5-MoE: Qwen3-MoE's layout, with the query fused with an output gate in `q_gate_proj`, per head
[q_h | gate_h] (the gate scales the attention output); the MoE block adds `shared_experts`, a dense gated MLP that
"intermediate" / "output" cover too."""

from dataclasses import replace

from .base import FusedSlice
from .qwen3_moe import QWEN3_MOE
from .registry import register_interface

MINICPM5_MOE = register_interface(replace(
    QWEN3_MOE, model_types=("minicpm5_moe",),
    attention={"q": FusedSlice("self_attn.q_gate_proj", 0, parts=2, per_head="num_attention_heads"),
               "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"},
    intermediate=(*QWEN3_MOE.intermediate, "mlp.shared_experts.up_proj?", "mlp.shared_experts.gate_proj?"),
    output=(*QWEN3_MOE.output, "mlp.shared_experts.down_proj?"),
    adapterhub={}, adapterhub_differs={},
))
