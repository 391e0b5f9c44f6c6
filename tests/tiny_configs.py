"""Shrink any transformers config to a tiny model: widths, layers, heads, kv heads, FFN, vocab, positions and
image sizes set small, in the config and its sub-configs (text / vision / audio towers), then rebuilt so that
derived values follow. Used by the sweep over transformers' own model list (test_model_sweep.py)."""

from __future__ import annotations

from transformers import CONFIG_MAPPING

WIDTH, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 32, 64, 2, 4, 2, 8, 128

_SET = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "embed_dim", "word_embed_proj_dim", "projection_dim",
                     "text_embed_dim", "vision_embed_dim", "hidden_dim_model", "encoder_hidden_size"), WIDTH),
    **dict.fromkeys(("intermediate_size", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim", "ffn_dim",
                     "shared_expert_intermediate_size", "ffn_hidden_size"), FFN),
    **dict.fromkeys(("moe_intermediate_size", "expert_intermediate_size"), WIDTH),
    **dict.fromkeys(("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
                     "num_decoder_layers", "num_encoder_layers", "text_layers", "vision_layers"), LAYERS),
    **dict.fromkeys(("num_attention_heads", "num_heads", "n_head", "n_heads", "encoder_attention_heads",
                     "decoder_attention_heads"), HEADS),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"), KV_HEADS),
    **dict.fromkeys(("head_dim", "d_kv", "kv_channels", "attention_head_dim", "qk_nope_head_dim", "v_head_dim"),
                    HEAD_DIM),
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_k", "top_k"), 2),
    "embedding_size": 16, "dim": WIDTH, "hidden_dim": FFN, "qk_rope_head_dim": HEAD_DIM, "kv_lora_rank": 16,
    "q_lora_rank": 16, "image_size": 32, "patch_size": 8, "num_mel_bins": 16, "max_source_positions": 16,
    "max_target_positions": 64, "num_channels": 3, "rotary_dim": HEAD_DIM, "window_size": 2,
    # Mamba mixers of hybrid decoders (Falcon-H1, Bamba, GraniteMoeHybrid): heads x head dim = the mixer width;
    # their reference kernels on the CPU scale with the state size and the chunk length
    "mamba_n_heads": 8, "mamba_d_head": HEAD_DIM, "mamba_d_ssm": 8 * HEAD_DIM, "mamba_d_state": 16,
    "mamba_chunk_size": 16,
}
_DROP = ("out_features", "out_indices", "stage_names")  # backbone outputs: recomputed from the layer count
_DROPOUT = ("dropout", "attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop",
            "embd_pdrop", "attn_pdrop", "activation_dropout", "hidden_dropout", "dropout_rate", "attn_dropout",
            "classifier_dropout")


def _shrink(d: dict) -> dict:
    out = {}
    for key, value in d.items():
        if key in _DROP:
            continue
        if isinstance(value, dict) and key.endswith("config"):
            out[key] = _shrink(value)
        elif key in _SET and isinstance(value, int) and not isinstance(value, bool) and value > _SET[key]:
            out[key] = _SET[key]
        elif key == "vocab_size" and isinstance(value, int) and value > VOCAB:
            out[key] = VOCAB
        elif key in _DROPOUT and isinstance(value, float):
            out[key] = 0.0
        elif (key.endswith("token_id") or key.endswith("token_index")) and isinstance(value, int) and value >= VOCAB:
            out[key] = VOCAB - 1 - (hash(key) % 16)  # inside the vocabulary, above the test inputs' ids
        elif key in ("max_position_embeddings", "n_positions") and isinstance(value, int) and value > 512:
            out[key] = 512
        elif key == "image_size" and isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, int) for v in value) and max(value) > 64:  # (YOLOS' 512 x 864: thousands of patches)
            out[key] = [64, 64]
        elif key == "layer_types" and isinstance(value, list):
            out[key] = value[:LAYERS]
        else:
            out[key] = value
    return out


def tiny_config(model_type: str):
    """A tiny config of `model_type` (its defaults, shrunk), eager attention; raises where it cannot be built."""
    cls = CONFIG_MAPPING[model_type]
    config = cls.from_dict(_shrink(cls().to_dict()))
    config._attn_implementation = "eager"
    return config
