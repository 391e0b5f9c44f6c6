"""`generate()` with the KV cache equals a hand-written greedy loop without cache, with adapters active.

Decoder-only (GPT-2, Llama) and encoder-decoder (BART, T5) LM models, each adapter config in CONFIGS with
randomised weights (so the continuation differs from the plain model's). New methods join by adding to CONFIGS.
"""

from __future__ import annotations

import pytest
import torch
from transformers import BartForConditionalGeneration, GPT2LMHeadModel, LlamaForCausalLM, T5ForConditionalGeneration

import adapterkit

import archs

MODELS = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "bart": BartForConditionalGeneration,
          "t5": T5ForConditionalGeneration}
CONFIGS = {
    "prefix_tuning": "prefix_tuning[prefix_length=3,bottleneck_size=8]",
    "lora": "lora[attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "ia3": "ia3",
    "dora": "dora[attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "seq_bn": "seq_bn",
    "double_seq_bn": "double_seq_bn",
    "par_bn": "par_bn",
    "seq_bn_inv": "seq_bn_inv",
    "mtl_lora": "mtl_lora[r=4,n_up_projection=2,attn_matrices=['q','k','v','o'],intermediate_lora=True]",
    "cross_seq_bn": "seq_bn[output_adapter=False,cross_adapter=True]",  # encoder-decoder models only
}
CASES = [(arch, config) for arch in MODELS for config in CONFIGS
         if not (config.startswith("cross") and not MODELS[arch].config_class().is_encoder_decoder)]
NEW_TOKENS = 6
# a larger init than the default makes tiny models' continuations depend on their weights (and so on adapters)
INIT = {"gpt2": {"initializer_range": 0.2}, "llama": {"initializer_range": 0.2}, "bart": {"init_std": 0.2},
        "t5": {"initializer_factor": 5.0}}


def lm(arch: str, cls=None, **init):
    model = archs.model(arch, cls=cls or MODELS[arch], bos_token_id=None, eos_token_id=None, pad_token_id=0,
                        forced_bos_token_id=None, forced_eos_token_id=None, decoder_start_token_id=0,
                        **{**INIT.get(arch, {}), **init})
    model.generation_config.update(eos_token_id=None, forced_bos_token_id=None, forced_eos_token_id=None,
                                   bos_token_id=None, pad_token_id=0, decoder_start_token_id=0,
                                   no_repeat_ngram_size=0, num_beams=1, do_sample=False)
    return adapterkit.init(model)


def prompt():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(2, archs.VOCAB, (2, 5), generator=g)
    return ids, torch.ones_like(ids)


@torch.no_grad()
def greedy_without_cache(model, ids, mask) -> torch.Tensor:
    if model.config.is_encoder_decoder:
        out = torch.zeros(ids.shape[0], 1, dtype=torch.long)  # decoder_start_token_id
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=out, use_cache=False).logits
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=-1)
        return out
    out = ids
    for _ in range(NEW_TOKENS):
        logits = model(input_ids=out, attention_mask=torch.ones_like(out), use_cache=False).logits
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=-1)
    return out


@torch.no_grad()
def generate_with_cache(model, ids, mask):
    """model.generate, and the query lengths its decoder layers saw (1 after the first step: the cache is used)."""
    layer = model.adapter_state.layers[-1]  # the last decoder layer
    lengths = []
    handle = layer.register_forward_pre_hook(
        lambda m, args, kwargs: lengths.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True)
    try:
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                             num_beams=1, use_cache=True)
    finally:
        handle.remove()
    return out, lengths


@pytest.mark.parametrize("arch,config", CASES)
def test_generate_with_cache_equals_greedy_loop(arch, config):
    model = lm(arch)
    ids, mask = prompt()
    plain = greedy_without_cache(model, ids, mask)
    model.add_adapter("a", config=CONFIGS[config], set_active=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.adapterkit["a"].parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    expected = greedy_without_cache(model, ids, mask)
    assert not torch.equal(expected, plain)  # the adapter steers the continuation
    generated, lengths = generate_with_cache(model, ids, mask)
    assert torch.equal(generated, expected)
    assert lengths[-NEW_TOKENS + 1:] == [1] * (NEW_TOKENS - 1)  # incremental decoding through the KV cache
    with adapterkit.AdapterSetup(None):
        assert torch.equal(generate_with_cache(model, ids, mask)[0], plain)


@pytest.mark.parametrize("arch", list(MODELS))
def test_generate_with_merged_lora_equals_unmerged(arch):
    model = lm(arch)
    ids, mask = prompt()
    model.add_adapter("a", config=CONFIGS["lora"], set_active=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.adapterkit["a"].parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    unmerged, _ = generate_with_cache(model, ids, mask)
    model.merge_adapter("a")
    assert torch.equal(generate_with_cache(model, ids, mask)[0], unmerged)
