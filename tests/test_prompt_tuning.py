"""Prompt tuning: the `adapters` package's outputs and files (BERT, RoBERTa), peft's both ways, and what neither
reference does: decoders and encoder-decoders, with generate() and its KV cache equal to a greedy loop of full
forwards without cache."""

from __future__ import annotations

import json
from pathlib import Path

import peft  # a test dependency: these checks must run, never skip
import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

import adapterkit
from adapterkit import PromptTuningConfig
from adapterkit.errors import AdapterConfigError, AdapterError
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub

import archs

FIXTURES = Path(__file__).parent / "fixtures"
PROMPT = FIXTURES / "adapters_prompt"
REF = FIXTURES / "adapters_ref"
CASES = ["prompt_tuning", "prompt_tuning_after_bos"]
MODEL_CLASSES = {"bert": tf.BertModel, "roberta": tf.RobertaModel}


def _base(arch):
    config = tf.AutoConfig.from_pretrained(REF / arch / "base")
    config._attn_implementation = "eager"
    model = MODEL_CLASSES[arch](config, add_pooling_layer=False)
    model.load_state_dict(load_file(REF / arch / "base" / "model.safetensors"), strict=False)
    return model.eval()


def _randomise(model, name, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.adapterkit[name].parameters():
            p.normal_(0, 1)


def _with_prompt(arch, cls=None, name="p", seed=0, overrides=None, **config):
    model = adapterkit.init(archs.model(arch, cls=cls, **(overrides or {})))
    model.add_adapter(name, config=PromptTuningConfig(**{"prompt_length": 3, **config}))
    _randomise(model, name, seed)
    model.set_active_adapters(name)
    return model


# -- the `adapters` package ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("arch", sorted(MODEL_CLASSES))
def test_matches_adapters_package(arch, case):
    model = adapterkit.init(_base(arch))
    config = config_from_adapterhub(json.loads((PROMPT / arch / case / "adapter_config.json").read_text()))
    model.add_adapter(case, config=config)
    weights = state_dict_from_adapterhub(load_file(PROMPT / arch / case / "adapter.safetensors"), case,
                                         model.adapter_state.interface, config)
    model.adapterkit[case].load_state_dict(weights)
    model.set_active_adapters(case)
    inputs = load_file(REF / arch / "inputs.safetensors")
    expected = load_file(PROMPT / arch / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        with adapterkit.AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert out.shape == expected.shape and out.shape[1] == base.shape[1] + config.prompt_length
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("arch", sorted(MODEL_CLASSES))
def test_package_saved_files_load_with_its_outputs(arch, case, tmp_path):
    model = adapterkit.init(_base(arch))
    name = model.load_adapter(PROMPT / arch / case / "saved", set_active=True)
    inputs = load_file(REF / arch / "inputs.safetensors")
    expected = load_file(PROMPT / arch / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, expected, atol=1e-5, rtol=0)
    model.save_adapter(tmp_path, name, format="adapterhub")  # and back: the same files load again
    again = adapterkit.init(_base(arch))
    again.load_adapter(tmp_path, set_active=True)
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).last_hidden_state, expected, atol=1e-5, rtol=0)


def test_the_package_refuses_decoders():
    manifest = json.loads((PROMPT / "manifest.json").read_text())
    assert set(manifest["refused"]) == {"gpt2", "llama"}
    assert all("is not supported by this model" in why for why in manifest["refused"].values())


# -- peft, both ways ----------------------------------------------------------------------------------------
PEFT_MODELS = {"bert": (tf.BertModel, "FEATURE_EXTRACTION"), "gpt2": (tf.GPT2LMHeadModel, "CAUSAL_LM"),
               "llama": (tf.LlamaForCausalLM, "CAUSAL_LM")}


def _peft_outputs(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("arch", sorted(PEFT_MODELS))
def test_peft_saved_prompt_loads_with_peft_outputs(arch, tmp_path):
    cls, task = PEFT_MODELS[arch]
    torch.manual_seed(3)
    peft_model = peft.get_peft_model(archs.model(arch, cls=cls), peft.PromptTuningConfig(
        task_type=task, num_virtual_tokens=4)).eval()
    peft_model.save_pretrained(tmp_path)
    batch = archs.inputs(arch)
    model = adapterkit.init(archs.model(arch, cls=cls))
    name = model.load_adapter(tmp_path / "default" if (tmp_path / "default").is_dir() else tmp_path, set_active=True)
    assert model.adapters_config[name].insert_at == "inputs"
    with torch.no_grad():
        expected = _peft_outputs(peft_model(**batch))
        out = _peft_outputs(model(**batch))
    assert out.shape == expected.shape and out.shape[1] == batch["input_ids"].shape[1] + 4
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", sorted(PEFT_MODELS))
def test_export_loads_in_peft_with_our_outputs(arch, tmp_path):
    cls, _ = PEFT_MODELS[arch]
    model = _with_prompt(arch, cls=cls, prompt_length=4, insert_at="inputs")
    model.save_adapter(tmp_path, "p", format="peft")
    peft_model = peft.PeftModel.from_pretrained(archs.model(arch, cls=cls), tmp_path).eval()
    batch = archs.inputs(arch)
    with torch.no_grad():
        torch.testing.assert_close(_peft_outputs(peft_model(**batch)), _peft_outputs(model(**batch)), atol=1e-5,
                                   rtol=0)


def test_package_placement_does_not_export_to_peft(tmp_path):
    model = _with_prompt("bert")
    with pytest.raises(AdapterConfigError, match="insert_at='inputs'"):
        model.save_adapter(tmp_path, "p", format="peft")


# -- decoders and encoder-decoders: generate() with the cache equals a greedy loop ------------------------------
GENERATE = {"gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM, "qwen2": tf.Qwen2ForCausalLM,
            "t5": tf.T5ForConditionalGeneration, "bart": tf.BartForConditionalGeneration}


def _greedy(model, ids, steps, seq2seq):
    """Full forward every step, no cache: (sequences, each step's last logits)."""
    scores = []
    with torch.no_grad():
        out = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id, dtype=torch.long) if seq2seq else ids
        for _ in range(steps):
            kwargs = {"input_ids": ids, "decoder_input_ids": out} if seq2seq else {"input_ids": out}
            logits = model(**kwargs, use_cache=False).logits[:, -1]
            scores.append(logits)
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
    return out, scores


def _generate(model, ids, steps):
    return model.generate(input_ids=ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                          use_cache=True, eos_token_id=None, forced_eos_token_id=None, pad_token_id=0, output_logits=True,
                          return_dict_in_generate=True)


@pytest.mark.parametrize("combine", ["prefix", "prefix_after_bos"])
@pytest.mark.parametrize("arch", sorted(GENERATE))
def test_generate_with_cache_equals_greedy_loop(arch, combine):
    model = _with_prompt(arch, cls=GENERATE[arch], prompt_length=5, combine=combine)
    seq2seq = arch in archs.SEQ2SEQ
    ids = archs.inputs(arch, batch=2, seq=6)["input_ids"]
    steps = 8
    loop, scores = _greedy(model, ids, steps, seq2seq)
    with torch.no_grad():
        generated = _generate(model, ids, steps)
        with adapterkit.AdapterSetup(None):
            plain = _generate(model, ids, steps)
    assert torch.equal(generated.sequences, loop)
    for ours, full in zip(generated.logits, scores):
        torch.testing.assert_close(ours, full, atol=1e-5, rtol=0)
    assert (plain.logits[0] - generated.logits[0]).abs().max() > 1e-3  # the prompt matters


def test_cached_decode_step_equals_full_forward():
    """The prompt goes in once: a step on the cache gives the last position of the full forward."""
    model = _with_prompt("llama", cls=tf.LlamaForCausalLM, prompt_length=4)
    ids = archs.inputs("llama", batch=2, seq=6)["input_ids"]
    with torch.no_grad():
        first = model(input_ids=ids[:, :5], use_cache=True)
        assert first.cache.get_seq_length() == 9  # the prompt is in the cache
        step = model(input_ids=ids[:, 5:], cache=first.cache, attention_mask=torch.ones(2, 6, dtype=torch.long))
        full = model(input_ids=ids, attention_mask=torch.ones(2, 6, dtype=torch.long)).logits
    assert full.shape[1] == 10
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], atol=1e-5, rtol=0)


def test_left_padded_generate_equals_loop_with_positions():
    model = _with_prompt("gpt2", cls=tf.GPT2LMHeadModel, prompt_length=4)
    ids = archs.inputs("gpt2", batch=2, seq=6)["input_ids"]
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with torch.no_grad():
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5,
                                   do_sample=False, eos_token_id=None, pad_token_id=0)
        seq, m = ids, mask
        for _ in range(5):
            positions = (m.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=seq, attention_mask=m, position_ids=positions, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            m = torch.cat([m, torch.ones_like(m[:, :1])], dim=1)
    assert torch.equal(generated, seq)


# -- outputs, labels and pooling -------------------------------------------------------------------------------
def test_causal_lm_loss_aligns_labels_past_the_prompt():
    """Logits keep the prompt positions (as both references); labels get -100 there, so the loss is over the real
    tokens, each predicted from the position before it: the first from the prompt's last position (peft's loss)."""
    model = _with_prompt("gpt2", cls=tf.GPT2LMHeadModel, prompt_length=4)
    ids = archs.inputs("gpt2", batch=2, seq=6)["input_ids"]
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape[1] == 10
    predicting = out.logits[:, 3:-1]  # the prompt's last position, then each real position but the last
    expected = torch.nn.functional.cross_entropy(predicting.reshape(-1, archs.VOCAB), ids.reshape(-1))
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=0)
    peft_model = peft.get_peft_model(archs.model("gpt2", cls=tf.GPT2LMHeadModel),
                                     peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    with torch.no_grad():
        peft_model.prompt_encoder.default.embedding.weight.copy_(model.adapterkit.p.shared.prompt.prompt_embedding.weight)
        torch.testing.assert_close(peft_model(input_ids=ids, labels=ids).loss, out.loss, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_last_token_pooling_finds_the_last_real_token(arch):
    """Sequence classification by the last non-pad token: with right padding it is found from the ids, which
    carry the prompt's placeholders, so it points past the prompt to the right row."""
    cls = {"gpt2": tf.GPT2ForSequenceClassification, "llama": tf.LlamaForSequenceClassification}[arch]
    model = _with_prompt(arch, cls=cls, prompt_length=3, overrides={"pad_token_id": 0})
    ids = archs.inputs(arch, batch=2, seq=6)["input_ids"]
    ids[1, 4:] = 0
    mask = (ids != 0).long()
    with torch.no_grad():
        pooled = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[1:, :4], attention_mask=mask[1:, :4]).logits  # the padded row, unpadded
    torch.testing.assert_close(pooled[1:], alone, atol=1e-5, rtol=0)


def test_cls_pooling_takes_the_first_position_as_the_package():
    """BERT's pooler reads position 0, which under the package's placement is the first prompt vector."""
    model = _with_prompt("bert", cls=tf.BertForSequenceClassification, prompt_length=3)
    inputs = archs.inputs("bert")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        expected = model.classifier(model.bert.pooler(hidden))
    torch.testing.assert_close(out.logits, expected)
    assert hidden.shape[1] == inputs["input_ids"].shape[1] + 3
    torch.testing.assert_close(model.bert.pooler.dense(hidden[:, 0]).tanh(), model.bert.pooler(hidden))


def test_token_classification_labels_line_up():
    model = _with_prompt("bert", cls=tf.BertForTokenClassification, prompt_length=3)
    inputs = archs.inputs("bert")
    labels = torch.randint(0, 2, inputs["input_ids"].shape)
    out = model(**inputs, labels=labels)
    assert out.logits.shape[1] == labels.shape[1] + 3
    expected = torch.nn.functional.cross_entropy(out.logits[:, 3:].reshape(-1, 2), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=0)


# -- every architecture ---------------------------------------------------------------------------------------
TEXT_ARCHS = [a for a in archs.ARCHS if archs.ARCHS[a][2] != "image"]


@pytest.mark.parametrize("arch", TEXT_ARCHS)
def test_every_text_architecture(arch):
    """The output grows by the prompt, the prompt changes the real positions, the mask hides padding (a padded
    row's real positions equal those of the same row without its padding)."""
    model = _with_prompt(arch, prompt_length=3)
    batch = archs.inputs(arch)
    key = "encoder_last_hidden_state" if arch in archs.SEQ2SEQ else "last_hidden_state"
    with torch.no_grad():
        out = model(**batch)[key]
        with adapterkit.AdapterSetup(None):
            base = model(**batch)[key]
        row = {k: v[1:2, :4] if k in ("input_ids", "attention_mask") else v[1:2] for k, v in batch.items()}
        alone = model(**row)[key]
    assert out.shape[1] == base.shape[1] + 3
    start = 3 if model.adapterkit["p"].shared.prompt.index == 0 else 0
    assert (out[:, start:start + base.shape[1]] - base).abs().max() > 1e-3
    torch.testing.assert_close(out[1:2, :7], alone, atol=1e-5, rtol=0)


def test_image_model_is_refused():
    model = adapterkit.init(archs.model("vit"))
    with pytest.raises(AdapterError, match="reads token ids"):
        model.add_adapter("p", config=PromptTuningConfig())


# -- the adapter's life cycle ----------------------------------------------------------------------------------
def test_merge_is_refused_clearly():
    model = _with_prompt("bert")
    with pytest.raises(AdapterError, match="prompt_tuning adapter and cannot be merged"):
        model.merge_adapter("p")


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_save_load_exact(arch, tmp_path):
    model = _with_prompt(arch, prompt_length=4)
    batch = archs.inputs(arch)
    model.save_adapter(tmp_path, "p")
    again = adapterkit.init(archs.model(arch))
    again.load_adapter(tmp_path, set_active=True)
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, again(**batch).last_hidden_state)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_train_adapter_trains_only_the_prompt(arch):
    cls = {"bert": tf.BertForSequenceClassification, "gpt2": tf.GPT2ForSequenceClassification}[arch]
    model = _with_prompt(arch, cls=cls, prompt_length=4, overrides={"pad_token_id": 0, "initializer_range": 0.2})
    model.train_adapter("p")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n in trainable if n.split(".")[0] in ("classifier", "score")}  # the task model's own head
    assert trainable - head == {"adapterkit.p.shared.prompt.prompt_embedding.weight"}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in trainable}
    prompt = model.adapterkit.p.shared.prompt.prompt_embedding.weight
    start = prompt.detach().clone()
    batch = archs.inputs(arch)
    batch["input_ids"][batch["attention_mask"] == 0] = 0
    labels = torch.tensor([1, 1, 1])
    opt = torch.optim.Adam([prompt], lr=0.3)  # the prompt alone must lower the loss
    losses = []
    for _ in range(30):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert (prompt - start).abs().max() > 1e-2


def test_float32_prompt_on_bfloat16_base():
    model = _with_prompt("llama", cls=tf.LlamaForCausalLM, prompt_length=4)
    reference = _with_prompt("llama", cls=tf.LlamaForCausalLM, prompt_length=4)
    model.to(torch.bfloat16)
    model.adapter_to("p", dtype=torch.float32)
    assert model.adapterkit.p.shared.prompt.prompt_embedding.weight.dtype == torch.float32
    ids = archs.inputs("llama")["input_ids"]
    out = model(input_ids=ids).logits
    out.float().sum().backward()
    assert model.adapterkit.p.shared.prompt.prompt_embedding.weight.grad.dtype == torch.float32
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    assert ((out.float() - expected).abs().max() / expected.abs().max()) < 0.05


def test_compiles_as_one_graph():
    model = _with_prompt("llama", cls=tf.LlamaForCausalLM, prompt_length=4)
    ids = archs.inputs("llama")["input_ids"]
    expected = model(input_ids=ids).logits
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(input_ids=ids).logits, expected)


def test_composition_blocks():
    model = _with_prompt("bert")
    model.add_adapter("lora", config="lora")
    model.add_adapter("p2", config=PromptTuningConfig(prompt_length=2))
    batch = archs.inputs("bert")
    model.set_active_adapters(adapterkit.Stack("lora", "p"))  # with another method: allowed
    with torch.no_grad():
        assert model(**batch).last_hidden_state.shape[1] == 10
    for block in (adapterkit.Parallel("p", "lora"), adapterkit.BatchSplit("p", "lora", batch_sizes=[1, 2]),
                  adapterkit.Average("p", "lora")):
        with pytest.raises(AdapterError, match="not supported for prompt tuning adapter"):
            model.set_active_adapters(block)
    with pytest.raises(AdapterError, match="one prompt per forward"):
        model.set_active_adapters(adapterkit.Stack("p", "p2"))


# -- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, match", [
    ({"prompt_length": 0}, "prompt_length"),
    ({"prompt_length": -3}, "prompt_length"),
    ({"prompt_length": 2.5}, "prompt_length"),
    ({"prompt_init": "zeros"}, "prompt_init"),
    ({"prompt_init": "from_string"}, "prompt_init_text"),
    ({"combine": "suffix"}, "combine"),
    ({"insert_at": "middle"}, "insert_at"),
])
def test_bad_fields(fields, match):
    with pytest.raises(AdapterConfigError, match=match):
        PromptTuningConfig(**fields)


def test_from_string_without_tokenizer_is_clear():
    model = adapterkit.init(archs.model("bert"))
    with pytest.raises(AdapterConfigError, match="needs a tokenizer"):
        model.add_adapter("p", config=PromptTuningConfig(prompt_init="from_string", prompt_init_text="hello"))


def test_from_string_uses_the_token_embeddings(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"[UNK]": 0, "hello": 5, "world": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("p", config=PromptTuningConfig(prompt_length=5, prompt_init="from_string",
                                                     prompt_init_text="hello world", tokenizer_name_or_path=str(tmp_path)))
    words = model.get_input_embeddings().weight
    torch.testing.assert_close(model.adapterkit.p.shared.prompt.prompt_embedding.weight, words[[5, 7, 5, 7, 5]])


def test_prompt_longer_than_the_positions():
    model = adapterkit.init(archs.model("gpt2"))
    with pytest.raises(AdapterConfigError, match="64 positions"):
        model.add_adapter("p", config=PromptTuningConfig(prompt_length=64))
    model.add_adapter("p", config=PromptTuningConfig(prompt_length=60), set_active=True)
    with pytest.raises(AdapterError, match="64 positions"):
        model(input_ids=torch.ones(1, 8, dtype=torch.long))


def test_embeddings_placement_refused_where_it_cannot_apply():
    model = adapterkit.init(archs.model("gpt2"))
    with pytest.raises(AdapterConfigError, match="insert_at='inputs'"):
        model.add_adapter("p", config=PromptTuningConfig(insert_at="embeddings"))


def test_four_d_mask_is_refused():
    model = _with_prompt("llama")
    with pytest.raises(AdapterError, match="2D attention mask"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 1, 4, 4))


def test_bart_for_causal_lm_takes_the_prompt_at_its_decoder_embeddings():
    """BartForCausalLM has a decoder only: the BART interface's embeddings (`encoder.layernorm_embedding`) fall back
    to the decoder's, so prompt tuning (and generate) work on it."""
    model = _with_prompt("bart", cls=tf.BartForCausalLM)
    assert model.adapter_state.embeddings_module() is model.model.decoder.layernorm_embedding
    ids = torch.arange(3, 9).unsqueeze(0)
    with torch.no_grad():
        out = model(input_ids=ids).logits
        model.set_active_adapters(None)
        base = model(input_ids=ids).logits
    assert out.shape[1] == base.shape[1] + 3 and not torch.allclose(out[:, 3:], base)  # (the prompt's 3 rows first)


def test_an_interface_whose_embeddings_are_missing_is_refused_clearly():
    from dataclasses import replace
    from adapterkit.interfaces.bart import BART
    model = archs.model("bart", cls=tf.BartForCausalLM)
    adapterkit.init(model, interface=replace(BART, embeddings="encoder.layernorm_embedding"))
    with pytest.raises(AdapterError, match="no embeddings module at 'encoder.layernorm_embedding'"):
        model.add_adapter("p", config=PromptTuningConfig(prompt_length=3))
