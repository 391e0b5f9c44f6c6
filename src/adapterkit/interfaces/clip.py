"""CLIP's text and vision towers (CLIPTextModel, CLIPVisionModel): pre-LN layers `x + attn(LN1(x))`,
`x + mlp(LN2(x))`. The two-tower CLIPModel (no config.hidden_size) goes through the automatic interface."""

from dataclasses import replace

from .base import ModelInterface, SublayerSite
from .registry import register_interface

CLIP = ModelInterface(
    model_types=("clip_text_model", "clip_vision_model"),
    embeddings="embeddings",
    layers="encoder.layers",
    attention={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj"},
    intermediate=("mlp.fc1",),
    output=("mlp.fc2",),
    residual_sites={
        "mh_adapter": SublayerSite(output="self_attn", residual="layer_norm1"),
        "output_adapter": SublayerSite(output="mlp", residual="layer_norm2"),
    },
    self_attention="self_attn",
    adapterhub={"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"},
)


def _tower(name: str) -> ModelInterface:
    """AdapterHub keys of a tower model (CLIPTextModel) start at its `text_model` / `vision_model`, and the package
    names each tower's prefix group after its model type."""
    return register_interface(replace(CLIP, model_types=(f"clip_{name}_model",),
                                      adapterhub_layers=f"{name}_model.encoder.layers",
                                      adapterhub={**CLIP.adapterhub, "prefix": f"clip_{name}_model_self_prefix"}))


CLIP_TEXT, CLIP_VISION = _tower("text"), _tower("vision")
