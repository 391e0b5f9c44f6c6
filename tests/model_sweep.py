"""The sweep over transformers' own model list: build a tiny model of a model type (tiny_configs.py), then try
each method on it with the automatic (or named) interface. Each method ends "ok" (all checks passed), "refused"
(an AdapterError, with its reason) or "failed" (anything else: a bug). Used by test_model_sweep.py and
tools/make_coverage.py (docs/coverage.md)."""

from __future__ import annotations

import copy
import logging
import signal
import tempfile
import traceback
from dataclasses import dataclass

import torch
import transformers as tf
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES

import adapterkit
from adapterkit import AdapterError
from adapterkit.interfaces import get_interface
from adapterkit.interfaces.infer import dummy_inputs, infer_interface

from tiny_configs import tiny_config

METHODS = {
    "lora": "lora",
    "ia3": "ia3",
    "seq_bn": "seq_bn",
    "par_bn": "par_bn",
    "prefix_tuning": "prefix_tuning[prefix_length=3,bottleneck_size=8]",
    "prompt_tuning": "prompt_tuning[prompt_length=3]",
}
IDENTITY = ("lora", "ia3", "par_bn")  # identity inits: outputs unchanged when added
MERGEABLE = ("lora", "ia3")
MODEL_TYPES = sorted(MODEL_MAPPING_NAMES)
MAX_PARAMETERS = 20_000_000
NEW_TOKENS = 3  # the generate() check: greedy tokens, with the KV cache and by full forwards without it
# generation-config entries that change greedy tokens (the checkpoints' defaults: BART's forced EOS at max_length,
# Marian's bad_words_ids, ...); the check compares the cache path with a plain greedy loop, so none applies
LOGITS_PROCESSORS = ("forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "suppress_tokens",
                     "begin_suppress_tokens", "no_repeat_ngram_size", "repetition_penalty", "min_length",
                     "min_new_tokens", "encoder_no_repeat_ngram_size", "sequence_bias")


@dataclass
class Built:
    model_type: str
    modality: str  # "text", "vision", "audio" or "other"
    model: torch.nn.Module | None = None
    why: str = ""  # why it could not be built
    interface: object = None  # its named or inferred interface (inferred once per model type)
    refusal: str = ""  # why no interface could be inferred (every method is refused with it)
    inputs: dict | None = None
    base: torch.Tensor | None = None  # the plain model's output on `inputs`
    lm: torch.nn.Module | None = None  # its causal LM (a generation head), for the generate() check
    lm_interface: object = None
    lm_why: str = ""  # why the causal LM could not be built or described (its check is skipped)


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout("timed out")


def _modality(model) -> str:
    name = getattr(model, "main_input_name", "input_ids")
    return {"input_ids": "text", "pixel_values": "vision", "input_features": "audio",
            "input_values": "audio"}.get(name, "other")


def first(output) -> torch.Tensor:
    while not isinstance(output, torch.Tensor):
        output = output[0]
    return output


def run(model, inputs) -> torch.Tensor:
    """The model's first output; under a fixed seed, as some forwards draw noise in eval mode too (ViT-MAE's
    random masking, VITS' stochastic duration predictor)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return first(model(**inputs))


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, dict):
        output = list(output.values())
    return [t for o in output for t in _tensors(o)] if isinstance(output, (tuple, list)) else []


def _every_output_loss(model, inputs) -> torch.Tensor:
    """A random projection of every floating output, for the backward check: the first output alone can leave
    a part of the model out (MaskFormer's first output is its backbone's, before the transformer decoder)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        outputs = _tensors(model(**inputs))
    g = torch.Generator().manual_seed(1)
    return sum((t * torch.randn(t.shape, generator=g)).sum() for t in outputs if t.requires_grad)


def build(model_type: str, seconds: int = 60, **overrides) -> Built:
    """A tiny eval-mode model of `model_type` whose plain forward runs, or why not; `overrides` set config
    attributes (a checkpoint family's layout variant)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        config = tiny_config(model_type)
        if overrides:  # built again, so that attributes derived at construction follow (Falcon's kv heads)
            config = type(config).from_dict({**config.to_dict(), **overrides}, attn_implementation="eager")
        with torch.device("meta"):  # count first: some defaults stay huge after shrinking
            size = sum(p.numel() for p in tf.AutoModel.from_config(config).parameters())
        if size > MAX_PARAMETERS:
            raise ValueError(f"{size} parameters after shrinking (more than {MAX_PARAMETERS})")
        torch.manual_seed(0)
        model = tf.AutoModel.from_config(config).eval()
        if hasattr(model, "set_default_language"):  # X-MOD's language adapters
            model.set_default_language(model.config.languages[0])
        inputs = dummy_inputs(model, batch=2)
        with torch.no_grad():
            base = run(model, inputs)
        if not base.abs().max() > 1e-6:  # (MobileViT's tiny 32-pixel stages): no change could be seen
            raise ValueError(f"the tiny model's outputs vanish (max |output| {float(base.abs().max()):.1e})")
    except Exception as e:  # noqa: BLE001 - what does not build is recorded, not tested
        return Built(model_type, "other", why=f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    built = Built(model_type, _modality(model), model, inputs=inputs, base=base)
    try:
        built.interface = get_interface(model_type)
    except AdapterError:  # none named: inferred once here (adapterkit.init does the same)
        try:
            built.interface = infer_interface(model)
        except AdapterError as e:
            built.refusal = str(e).splitlines()[0]
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not built.refusal:
        _build_lm(built, config, built.interface if get_interface_or_none(model_type) else None)
    return built


def get_interface_or_none(model_type: str):
    try:
        return get_interface(model_type)
    except AdapterError:
        return None


def _build_lm(built: Built, config, interface) -> None:
    """The tiny causal LM of the same config (same seed), with its named or inferred interface."""
    try:
        torch.manual_seed(0)
        config = copy.deepcopy(config)  # (WhisperForCausalLM edits it)
        config.is_decoder = True  # RoBERTa-type encoders are causal LMs only so (transformers warns otherwise)
        lm = tf.AutoModelForCausalLM.from_config(config).eval()
        generation = lm.generation_config
        generation.eos_token_id = None  # (a continuation of exactly NEW_TOKENS tokens)
        generation.pad_token_id = 0
        for name in LOGITS_PROCESSORS:  # greedy decoding only: what the greedy loop computes (BART forces EOS)
            if getattr(generation, name, None) is not None:
                setattr(generation, name, None)
        ids = _prompt(built)
        with torch.no_grad():
            if not torch.equal(_generate(lm, ids), greedy_loop(lm, ids, NEW_TOKENS)):
                # (RoBERTa-type models: generate() passes position_ids from 0, their forward counts from
                # padding_idx + 1 without them)
                raise ValueError("the base model's own generate() differs from its greedy loop of full forwards "
                                 "(on transformers' side: RoBERTa-type models, for one, get position ids from 0 in "
                                 "generate()), so an adapter's difference could not be seen")
        built.lm_interface = interface or infer_interface(lm)
        built.lm = lm
    except Exception as e:  # noqa: BLE001 - recorded: the generate() check is then skipped
        built.lm_why = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _prompt(built: Built) -> torch.Tensor:
    return built.inputs["input_ids"][:1] if "input_ids" in built.inputs else torch.arange(3, 9).unsqueeze(0)


def _generate(model, ids: torch.Tensor) -> torch.Tensor:
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                          do_sample=False)


def greedy_loop(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` greedy tokens by full forwards without a cache."""
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def check_generate(built: Built, method: str) -> tuple[str, str]:
    """The method (randomised) on the causal LM: generate() with the KV cache equals the greedy loop."""
    model = copy.deepcopy(built.lm)
    try:
        adapterkit.init(model, interface=built.lm_interface)
        model.add_adapter("a", config=METHODS[method])
    except AdapterError as e:
        return "refused", "on the causal LM: " + str(e).splitlines()[0]
    model.set_active_adapters("a")
    _randomize(model.adapterkit["a"])
    ids = _prompt(built)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            cached = _generate(model, ids)
        except AdapterError as e:
            return "refused", "generate(): " + str(e).splitlines()[0]
        looped = greedy_loop(model, ids, NEW_TOKENS)
    assert torch.equal(cached, looped), (f"generate() with the KV cache gives {cached[0, -NEW_TOKENS:].tolist()}, "
                                         f"a greedy loop without it {looped[0, -NEW_TOKENS:].tolist()}")
    return "ok", ""


def _randomize(module, scale=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * scale)


def _close(a, b, atol=1e-5) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= atol + 1e-5 * b.abs().max())


def check(built: Built, method: str) -> tuple[str, str]:
    """("ok", "") / ("refused", reason); an AssertionError or any other exception is a failure."""
    logging.getLogger("adapterkit.interfaces.infer").setLevel(logging.WARNING)
    if built.refusal:
        return "refused", built.refusal
    inputs, base = built.inputs, built.base
    model = copy.deepcopy(built.model)
    try:
        adapterkit.init(model, interface=built.interface)
        model.add_adapter("a", config=METHODS[method])
    except AdapterError as e:
        assert str(e), "a refusal without a reason"
        return "refused", str(e).splitlines()[0]
    model.set_active_adapters("a")
    with torch.no_grad():
        try:
            added = run(model, inputs)
        except AdapterError as e:  # a refusal that only the forward can tell (prompt tuning: the model's lengths)
            return "refused", str(e).splitlines()[0]
        if method in IDENTITY:
            assert _close(added, base, 1e-6), f"{method} at its init changes the outputs"
    model.train_adapter("a")
    _randomize(model.adapterkit["a"])
    model.eval()
    out = run(model, inputs)
    if out.shape == base.shape:
        # (well above float noise; relative, as layer scales keep some tiny models' sublayer outputs small)
        assert (out - base).abs().max() > max(1e-6, 1e-5 * base.abs().max()), f"{method} does not change the outputs"
    _every_output_loss(model, inputs).backward()
    unused = [n for n, p in model.adapterkit["a"].named_parameters() if p.grad is None]
    assert not unused, f"adapter parameters not reached by backward: {unused[:4]}"
    with torch.no_grad():
        trained = run(model, inputs)
        if method in MERGEABLE:
            model.merge_adapter("a")
            assert _close(run(model, inputs), trained, 1e-4), "merged outputs differ from unmerged"
            model.reset_adapter("a")
            assert _close(run(model, inputs), trained, 1e-4), "reset outputs differ"
    with tempfile.TemporaryDirectory() as d:
        model.save_adapter(d, "a")
        other = adapterkit.init(copy.deepcopy(built.model), interface=built.interface)
        other.load_adapter(d, load_as="a", set_active=True)
        with torch.no_grad():
            assert _close(run(other, inputs), trained, 1e-5), "save -> load changes the outputs"
    if built.lm is not None:  # a decoder with a generation head
        return check_generate(built, method)
    return "ok", ""


def sweep(model_types=MODEL_TYPES, methods=tuple(METHODS), seconds: int = 60, progress=None):
    """{model_type: (Built, {method: (status, reason)})}; failures as ("failed", message). `progress`: called
    with (model_type, Built, row) after each model type."""
    table = {}
    for model_type in model_types:
        built = build(model_type, seconds)
        row = {}
        if built.model is not None:
            for method in methods:
                old = signal.signal(signal.SIGALRM, _alarm)
                signal.alarm(seconds)
                try:
                    row[method] = check(built, method)
                except Exception as e:  # noqa: BLE001 - reported as a failure
                    tb = traceback.extract_tb(e.__traceback__)[-1]
                    row[method] = ("failed", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                                             f" ({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})")
                finally:
                    signal.alarm(0)
                    signal.signal(signal.SIGALRM, old)
        built.model = built.lm = None  # (free them)
        table[model_type] = (built, row)
        if progress is not None:
            progress(model_type, built, row)
    return table
