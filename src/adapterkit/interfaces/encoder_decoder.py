"""EncoderDecoderModel (model type "encoder-decoder": BERT2BERT and the like): composed from its two sides' named
interfaces, per model, since the sides are any encoder and any decoder with cross-attention.

The encoder's layers are `encoder.<its stack>`, the decoder's `decoder.<its base model>.<its stack>`; both sides
must share one layer layout (the interface has one set of layer paths), else the composition is refused and
`adapterkit.init` infers an interface instead. AdapterHub names follow the `adapters` package, which adapts each
side as its own model: layers numbered per side, and a prefix pool per side (the encoder's `self_prefix` is our
`prefix_encoder`; the decoder's `self_prefix` and `cross_prefix`, our `prefix` and `prefix_cross`). The
invertible adapter runs on the encoder's embeddings only and, inverted, before the decoder's LM head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import AdapterError
from .base import ModelInterface
from .registry import get_interface, register_interface

# fields that describe one layer: both sides must agree on them
_LAYER_FIELDS = ("attention", "intermediate", "output", "self_attention", "attention_registry", "own_attention",
                 "attention_bias_kwargs", "position_bias", "embeddings_tap")


def _side(config, which: str) -> ModelInterface:
    sub = getattr(config, which)
    try:
        interface = get_interface(sub.model_type).for_config(sub)
    except AdapterError:
        raise AdapterError(f"the {which} ({sub.model_type}) has no named interface") from None
    if len(interface.layers) != 1:
        raise AdapterError(f"the {which} ({sub.model_type}) has {len(interface.layers)} layer stacks; one expected")
    return interface


@dataclass(frozen=True)
class EncoderDecoderInterface(ModelInterface):
    def for_model(self, model) -> ModelInterface:
        config = model.config
        encoder, decoder = _side(config, "encoder"), _side(config, "decoder")
        differ = [f for f in _LAYER_FIELDS if getattr(encoder, f) != getattr(decoder, f)]
        differ += [f"residual site {k}" for k in ("mh_adapter", "output_adapter")
                   if encoder.residual_sites.get(k) != decoder.residual_sites.get(k)]
        sizes = [(getattr(c, "hidden_size", None) or getattr(c, "d_model", None), getattr(c, "num_attention_heads", 0))
                 for c in (config.encoder, config.decoder)]
        if not decoder.cross_attention or "cross_adapter" not in decoder.residual_sites:
            raise AdapterError(f"the decoder's interface ({config.decoder.model_type}) describes no cross-attention")
        if differ or sizes[0] != sizes[1]:
            raise AdapterError(f"the encoder's and decoder's layers differ ({', '.join(differ) or 'in width or heads'})")
        prefix = getattr(model.decoder, "base_model_prefix", "")
        dec = f"decoder.{prefix}." if prefix and hasattr(model.decoder, prefix) else "decoder."
        enc_stack, dec_stack = "encoder." + encoder.layers[0].rstrip("?"), dec + decoder.layers[0].rstrip("?")
        enc_hub, dec_hub = ("encoder." + encoder.hub_layers()[0].rstrip("?"),
                            dec + decoder.hub_layers()[0].rstrip("?"))
        pool = "prefix_tuning.prefix_tunings.{name}."  # (each side's own pool: methods/prefix_tuning/adapterhub.py)
        hub = {**decoder.adapterhub, "invertible": "invertible_adapters",
               "prefix_encoder": "encoder." + pool + encoder.adapterhub.get("prefix", "self_prefix"),
               "prefix": dec + pool + decoder.adapterhub.get("prefix", "self_prefix"),
               "prefix_cross": dec + pool + "cross_prefix"}
        width, heads = sizes[0]
        kv = getattr(config.decoder, "num_key_value_heads", None) or heads
        head_dim = getattr(config.decoder, "head_dim", None) or width // heads
        return replace(
            decoder, model_types=self.model_types, embeddings="encoder." + encoder.embeddings,
            layers=(enc_stack, dec_stack), encoder_layers=enc_stack, adapterhub_layers=(enc_hub, dec_hub),
            adapterhub=hub, lm_heads=tuple(f"decoder.{h}" for h in decoder.lm_heads), task_heads={},
            hidden_size=width, attention_shape=(kv, head_dim), variants=())


ENCODER_DECODER = register_interface(EncoderDecoderInterface(
    model_types=("encoder-decoder",), embeddings="", layers=(), attention={}, intermediate=(), output=(),
    residual_sites={}))
