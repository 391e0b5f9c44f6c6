"""Mixtral: Mistral's attention; every FFN a sparse MoE block (`mlp`: a router `gate` and fused `experts` with 3D
`gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I]).

"intermediate" is each expert's `gate_up_proj`, "output" each expert's `down_proj` (LoRA and (IA)^3 there are per
expert: methods/lora/experts.py); the output adapter sits on the MoE block's output, before the residual add.
"""

from dataclasses import replace

from .llama import LLAMA
from .registry import register_interface

MIXTRAL = register_interface(replace(
    LLAMA, model_types=("mixtral",),
    intermediate=("mlp.experts.gate_up_proj",),
    output=("mlp.experts.down_proj",),
    adapterhub_differs={loc: "the `adapters` package has no mixture-of-experts FFN (per-expert LoRA / (IA)^3 on "
                                  "fused expert weights)" for loc in ("intermediate", "output")},
))
