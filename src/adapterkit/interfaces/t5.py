"""T5: pre-LN (RMS) encoder-decoder; each block is a list of sublayers `x + dropout(f(LN(x)))`:
self-attention, cross-attention (decoder only), then the FFN `DenseReluDense` (`wi`, or gated `wi_0`/`wi_1`; `wo`).

Layers are numbered encoder first, then decoder (as `adapters`). The invertible adapter transforms the encoder's
input to its first block (after the embedding dropout), as `adapters` does.
"""

from .base import ModelInterface, SublayerSite
from .registry import register_interface


def _attention(prefix: str, optional: str = "") -> dict:
    return {m: f"{prefix}.{m}{optional}" for m in ("q", "k", "v", "o")}


T5 = register_interface(ModelInterface(
    model_types=("t5",),
    embeddings="encoder.block.0",
    embeddings_tap="input",
    layers=("encoder.block?", "decoder.block?"),
    attention=_attention("layer.0.SelfAttention"),
    cross_attention_projections=_attention("layer.1.EncDecAttention", "?"),  # "?": T5EncoderModel has none
    intermediate=("layer.-1.DenseReluDense.wi|layer.-1.DenseReluDense.wi_0", "layer.-1.DenseReluDense.wi_1?"),
    output=("layer.-1.DenseReluDense.wo",),
    residual_sites={
        "mh_adapter": SublayerSite(output="layer.0.dropout", residual="layer.0.layer_norm"),
        "cross_adapter": SublayerSite(output="layer.1.dropout", residual="layer.1.layer_norm",
                                      guard="layer.1.EncDecAttention"),
        "output_adapter": SublayerSite(output="layer.-1.dropout", residual="layer.-1.layer_norm"),
    },
    self_attention="layer.0.SelfAttention",
    cross_attention="layer.1.EncDecAttention",
    encoder_layers="encoder.block",
    lm_heads=("lm_head",),
    attention_bias_kwargs=("position_bias",),
    position_bias="compute_bias",
    adapterhub={"invertible": "encoder.invertible_adapters",
                "mh_adapter": "layer.0", "cross_adapter": "layer.1", "output_adapter": "layer.-1"},
    adapterhub_differs={"intermediate_1": "in gated T5 FFNs the `adapters` package puts its intermediate LoRA / "
                                          "(IA)^3 on wi_1 alone (adapterkit: wi_0 and wi_1)"},
))
