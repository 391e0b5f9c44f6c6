"""Every model type in transformers' MODEL_MAPPING_NAMES that shrinks to a tiny model (tiny_configs.py) x LoRA,
(IA)^3, seq_bn, par_bn, prefix tuning and prompt tuning, through the automatic interface where none is named
(model_sweep.py): each ends trained-and-checked or refused with an AdapterError naming why; anything else fails.
The default suite runs a sample; the whole list is `slow` (tools/make_coverage.py writes docs/coverage.md)."""

from __future__ import annotations

import functools

import pytest

import model_sweep

# a sample across layouts: encoders, decoders (separate / fused / parallel / post-norm / MoE), encoder-decoders,
# vision, audio, and refusals (no layer stack; attention outside the registry)
SAMPLE = ["albert", "beit", "bert-generation", "biogpt", "bloom", "clip_text_model", "clip_vision_model",
          "cohere", "convnext", "deberta-v2", "falcon", "gemma2", "gpt_neox", "gptj", "mt5", "olmo2", "phi", "phi3",
          "qwen3", "qwen3_moe", "stablelm", "starcoder2", "whisper"]
SLOW = [t for t in model_sweep.MODEL_TYPES if t not in SAMPLE]


@functools.lru_cache(maxsize=None)
def _built(model_type):
    return model_sweep.build(model_type)


def _check(model_type, method):
    built = _built(model_type)
    if built.model is None:
        pytest.skip(f"{model_type} does not build tiny: {built.why}")
    status, reason = model_sweep.check(built, method)
    assert status in ("ok", "refused")
    if status == "refused":
        assert reason
    return status, reason


@pytest.mark.parametrize("method", list(model_sweep.METHODS))
@pytest.mark.parametrize("model_type", SAMPLE)
def test_sample(model_type, method):
    status, reason = _check(model_type, method)
    if model_type == "convnext":  # no attention layers at all
        assert status == "refused" and "none could be inferred" in reason
    elif model_type == "qwen3_moe":  # experts: no FFN sites; the attention takes LoRA
        assert status == "ok" if method == "lora" else "mixture-of-experts" in reason, reason
    elif method in ("lora", "ia3", "seq_bn", "par_bn"):  # every other sampled transformer takes these
        assert status == "ok", reason


@pytest.mark.slow
@pytest.mark.parametrize("method", list(model_sweep.METHODS))
@pytest.mark.parametrize("model_type", SLOW)
def test_all_model_types(model_type, method):
    _check(model_type, method)
