"""Tiny models of every built-in architecture, built from configs (no downloads), and inputs for them."""

from __future__ import annotations

import torch
import transformers as tf

H, L, HEADS, FF, VOCAB = 32, 2, 4, 64, 99

_TEXT = dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS, intermediate_size=FF, vocab_size=VOCAB,
             max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_DEBERTA = dict(_TEXT, relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=16)
_DECODER = dict(hidden_size=H, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=HEADS,
                num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64)
_T5 = dict(d_model=H, d_kv=8, d_ff=FF, num_layers=L, num_decoder_layers=L, num_heads=HEADS, vocab_size=VOCAB,
           dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)

# name -> (config class, config kwargs, input kind)
ARCHS = {
    "bert": (tf.BertConfig, _TEXT, "text"),
    "roberta": (tf.RobertaConfig, dict(_TEXT, pad_token_id=1), "text"),
    "xlm-roberta": (tf.XLMRobertaConfig, dict(_TEXT, pad_token_id=1), "text"),
    "electra": (tf.ElectraConfig, dict(_TEXT, embedding_size=16), "text"),
    "distilbert": (tf.DistilBertConfig, dict(dim=H, hidden_dim=FF, n_layers=L, n_heads=HEADS, vocab_size=VOCAB,
                                             max_position_embeddings=64, dropout=0.0, attention_dropout=0.0), "text"),
    "deberta": (tf.DebertaConfig, _DEBERTA, "text"),
    "deberta-v2": (tf.DebertaV2Config, _DEBERTA, "text"),
    "vit": (tf.ViTConfig, dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS, intermediate_size=FF,
                               image_size=16, patch_size=4, num_channels=3), "image"),
    "gpt2": (tf.GPT2Config, dict(n_embd=H, n_layer=L, n_head=HEADS, vocab_size=VOCAB, n_positions=64,
                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1),
             "text"),
    "bart": (tf.BartConfig, dict(d_model=H, encoder_layers=L, decoder_layers=L, encoder_attention_heads=HEADS,
                                 decoder_attention_heads=HEADS, encoder_ffn_dim=FF, decoder_ffn_dim=FF,
                                 vocab_size=VOCAB, max_position_embeddings=64, dropout=0.0,
                                 attention_dropout=0.0, activation_dropout=0.0), "seq2seq"),
    "t5": (tf.T5Config, _T5, "seq2seq"),
    "t5-gated": (tf.T5Config, dict(_T5, feed_forward_proj="gated-gelu"), "seq2seq"),
    "llama": (tf.LlamaConfig, _DECODER, "text"),
    "mistral": (tf.MistralConfig, _DECODER, "text"),
    "qwen2": (tf.Qwen2Config, _DECODER, "text"),
}
# the named interfaces added for issue 17 (not in ARCHS, so that other tests' sweeps keep their size;
# test_architectures runs a sample of them by default and all of them as `slow`)
_SMALL_HEADS = dict(_DECODER, head_dim=8)
NAMED = {
    "bert-generation": (tf.BertGenerationConfig, _TEXT, "text"),
    "clip-text": (tf.CLIPTextConfig, dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                                          intermediate_size=FF, vocab_size=VOCAB, max_position_embeddings=64),
                  "text"),
    "clip-vision": (tf.CLIPVisionConfig, dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                                              intermediate_size=FF, image_size=16, patch_size=4), "image"),
    "gemma2": (tf.Gemma2Config, _SMALL_HEADS, "text"),
    "gemma3-text": (tf.Gemma3TextConfig, _SMALL_HEADS, "text"),
    "qwen3": (tf.Qwen3Config, _SMALL_HEADS, "text"),
    "smollm3": (tf.SmolLM3Config, dict(_DECODER, pad_token_id=0, bos_token_id=1, eos_token_id=2), "text"),
    "olmo2": (tf.Olmo2Config, _DECODER, "text"),
    "starcoder2": (tf.Starcoder2Config, _DECODER, "text"),
    "cohere": (tf.CohereConfig, _DECODER, "text"),
    "phi": (tf.PhiConfig, _DECODER, "text"),
    "gptj": (tf.GPTJConfig, dict(n_embd=H, n_layer=L, n_head=HEADS, rotary_dim=4, vocab_size=VOCAB, n_positions=64,
                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), "text"),
    "modernbert": (tf.ModernBertConfig, dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                                             intermediate_size=FF, vocab_size=VOCAB, max_position_embeddings=64,
                                             pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                             sep_token_id=2, initializer_range=0.2), "text"),
    "mbart": (tf.MBartConfig, ARCHS["bart"][1], "seq2seq"),
    "plbart": (tf.PLBartConfig, ARCHS["bart"][1], "seq2seq"),
    "mt5": (tf.MT5Config, _T5, "seq2seq"),
}
NAMED_SAMPLE = ["gemma2", "gptj"]  # post-sublayer norms, parallel sublayers
DECODERS = ["gpt2", "llama", "mistral", "qwen2"]
SEQ2SEQ = ["bart", "t5", "t5-gated"]


def _spec(arch: str):
    return ARCHS[arch] if arch in ARCHS else NAMED[arch]


def config(arch: str, **overrides):
    cls, kwargs, _ = _spec(arch)
    cfg = cls(**{**kwargs, **overrides})
    cfg._attn_implementation = "eager"
    return cfg


def model(arch: str, cls=None, seed: int = 0, **overrides):
    """A tiny model (the bare AutoModel class unless `cls` is given), in eval mode."""
    torch.manual_seed(seed)
    cfg = config(arch, **overrides)
    cls = cls or tf.AutoModel._model_mapping[type(cfg)]
    return cls(cfg).eval()


def inputs(arch: str, batch: int = 3, seq: int = 7, seed: int = 7) -> dict:
    """Inputs with right padding in row 1 (text); pixel values for images; decoder ids for seq2seq."""
    g = torch.Generator().manual_seed(seed)
    kind = _spec(arch)[2]
    if kind == "image":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    ids = torch.randint(2, VOCAB, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if kind == "seq2seq":
        out["decoder_input_ids"] = torch.randint(2, VOCAB, (batch, 5), generator=g)
    return out


def randomised(arch: str, configs: dict, cls=None, seed: int = 0, scale: float = 0.2):
    """A tiny model with adapterkit and one adapter per `configs` entry (name -> config), every adapter parameter
    moved by N(0, scale) noise so that identity inits hide nothing."""
    import adapterkit

    built = adapterkit.init(model(arch, cls=cls))
    for name, adapter_config in configs.items():
        built.add_adapter(name, config=adapter_config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in built.adapterkit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return built
