"""`generate(adapter_names=[...])` with the KV cache: each row generates with its own adapter (or the plain model).

GPT-2, Llama (left padding) and T5 LM models with 3 randomised adapters of one method (LoRA, (IA)^3, DoRA, VeRA
vectorised; seq_bn, prefix tuning grouped) and base rows (None and "__base__"); BART, Mistral and Qwen2 with LoRA
and prefix tuning. Greedy (tokens and every step's logits) and beam search with num_return_sequences equal each
row generated alone (its prompt without padding) with its adapter active.

Sampling draws depend on the batch: transformers samples with torch.multinomial, which draws every row's token
from one random stream, so a row's draw depends on the batch's shape (not on the other rows' probabilities), and
a row alone cannot reproduce its draws in a batch. What is exactly comparable is the same batch under the same seed
with one adapter active for every row: the rows routed to that adapter must equal those rows.
"""

from __future__ import annotations

import pytest
import torch

from transformers import MistralForCausalLM, Qwen2ForCausalLM

import adapterkit
from adapterkit import AdapterError, MultiTask

from test_generate import lm

ARCHS = ["gpt2", "llama", "t5"]
CONFIGS = {
    "lora": "lora[r=4,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "ia3": "ia3",
    "seq_bn": "seq_bn[reduction_factor=4]",
    "prefix_tuning": "prefix_tuning[prefix_length=3,bottleneck_size=8]",
    "dora": "dora[r=4,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "vera": "vera[r=8]",
}
NAMES = ["a", None, "b", "c", "__base__", "a"]
NEW = 5
# T5's larger init of test_generate.py saturates beam scores into exact ties (any order of them is right)
INIT = {"t5": {"initializer_factor": 2.0}, "mistral": {"initializer_range": 0.2}, "qwen2": {"initializer_range": 0.2}}
# the other decoders and encoder-decoders, greedy and beam search on one vectorised and one grouped method
MORE = {"bart": None, "mistral": MistralForCausalLM, "qwen2": Qwen2ForCausalLM}


def _model(arch: str, method: str):
    model = lm(arch, cls=MORE.get(arch), **INIT.get(arch, {}))
    for name in "abc":
        model.add_adapter(name, config=CONFIGS[method])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def _prompts(model):
    """Rows of different lengths: left padding for decoders, right padding for the encoder of T5."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(2, 50, (len(NAMES), 6), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in ((1, 2), (3, 3), (5, 1)):
        if model.config.is_encoder_decoder:
            mask[row, ids.shape[1] - pad:] = 0
        else:
            mask[row, :pad] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _generate(model, ids, mask, logits=False, **options):
    """The new tokens (decoders' outputs start with the prompt); with `logits`, also each step's (rows, NEW, V)."""
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, use_cache=True,
                             return_dict_in_generate=True, output_logits=logits, **options)
    tokens = out.sequences[:, -NEW:]
    return (tokens, torch.stack(out.logits, dim=1)) if logits else tokens


def _alone(model, ids, mask, row, name, **options):
    keep = mask[row].bool()
    with adapterkit.AdapterSetup(None if name == "__base__" else name):
        return _generate(model, ids[row:row + 1, keep], mask[row:row + 1, keep], **options)


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_each_row_alone(arch, method):
    model = _model(arch, method)
    ids, mask = _prompts(model)
    out, logits = _generate(model, ids, mask, logits=True, do_sample=False, adapter_names=NAMES)
    for row, name in enumerate(NAMES):
        expected, expected_logits = _alone(model, ids, mask, row, name, logits=True, do_sample=False)
        assert torch.equal(out[row:row + 1], expected), (row, name)
        # float32 rounding grows with the logits' scale (T5's are ~10): rows of one adapter share one matmul
        # (segmented.py) where alone each is its own; in float64 the two agree exactly
        scale = max(1.0, expected_logits.abs().max().item())
        torch.testing.assert_close(logits[row:row + 1], expected_logits, atol=1e-4 * scale, rtol=1e-4)
        if name not in (None, "__base__"):  # the adapter steers the row: a routing to the base model would fail
            _, base_logits = _alone(model, ids, mask, row, None, logits=True, do_sample=False)
            assert (logits[row] - base_logits[0]).abs().max() > 1e-2, (row, name)


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_beam_search_equals_each_row_alone(arch, method):
    model = _model(arch, method)
    ids, mask = _prompts(model)
    options = dict(do_sample=False, num_beams=3, num_return_sequences=2)
    out = _generate(model, ids, mask, adapter_names=NAMES, **options)
    assert out.shape[0] == 2 * len(NAMES)
    changed = 0
    for row, name in enumerate(NAMES):
        expected = _alone(model, ids, mask, row, name, **options)
        assert torch.equal(out[2 * row:2 * row + 2], expected), (row, name)
        if name not in (None, "__base__"):
            changed += not torch.equal(expected, _alone(model, ids, mask, row, None, **options))
    assert changed >= 2  # the adapters change the beams
    model.generation_config.update(num_beams=3, num_return_sequences=2)  # beams from the config expand alike
    assert torch.equal(_generate(model, ids, mask, adapter_names=NAMES, do_sample=False), out)


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_equals_the_batch_with_each_rows_adapter_active(arch, method):
    model = _model(arch, method)
    ids, mask = _prompts(model)
    options = dict(do_sample=True, num_beams=1, top_k=0, num_return_sequences=2)
    torch.manual_seed(11)
    out = _generate(model, ids, mask, adapter_names=NAMES, **options)
    torch.manual_seed(12)
    assert not torch.equal(_generate(model, ids, mask, adapter_names=NAMES, **options), out)  # it does sample
    for setup in ("a", "b", "c", None):
        torch.manual_seed(11)
        with adapterkit.AdapterSetup(setup):
            everyone = _generate(model, ids, mask, **options)
        rows = [r for r, name in enumerate(NAMES) if (None if name == "__base__" else name) == setup]
        expanded = [2 * r + k for r in rows for k in range(2)]
        assert torch.equal(out[expanded], everyone[expanded]), setup
        others = [2 * r + k for r in range(len(NAMES)) if r not in rows for k in range(2)]
        assert not torch.equal(out[others], everyone[others]), setup  # the other rows had their own adapters


@pytest.mark.parametrize("arch", ARCHS)
def test_wrong_length_or_unknown_names_are_clear_errors_and_leave_nothing_behind(arch):
    model = _model(arch, "lora")
    ids, mask = _prompts(model)
    with pytest.raises(AdapterError, match=rf"3 entries for {len(NAMES)} input rows.*num_beams"):
        _generate(model, ids, mask, adapter_names=["a", "b", "c"], num_beams=2)
    with pytest.raises(AdapterError, match=r"'nope'.*do not exist.*'a', 'b', 'c'"):
        _generate(model, ids, mask, adapter_names=NAMES[:-1] + ["nope"])
    with pytest.raises(AdapterError, match=r"must be a list with one adapter name"):
        _generate(model, ids, mask, adapter_names="a")
    record = model.adapter_state.record
    assert record.generate_rows is None and record.routing is None and record.inputs is None
    out = _generate(model, ids, mask, adapter_names=NAMES)  # still works afterwards
    assert torch.equal(out[1:2], _alone(model, ids, mask, 1, None))


def test_the_encoder_takes_adapter_names_when_called_on_its_own():
    model = _model("t5", "lora")
    ids, mask = _prompts(model)
    with torch.no_grad():
        out = model.get_encoder()(input_ids=ids, attention_mask=mask, adapter_names=NAMES).last_hidden_state
        for row, name in enumerate(NAMES):
            with adapterkit.AdapterSetup(None if name == "__base__" else name):
                alone = model.get_encoder()(input_ids=ids[row:row + 1],
                                            attention_mask=mask[row:row + 1]).last_hidden_state
            torch.testing.assert_close(out[row:row + 1], alone, atol=1e-4, rtol=1e-4)  # (float32 rounding: see above)
    assert model.adapter_state.record.routing is None


def test_an_encoder_whose_signature_lacks_the_names_still_routes_in_generate():
    """generate() passes an encoder only the arguments its signature names (without **kwargs): the rows then
    reach the encoder's hooks from generate() itself."""
    model = _model("t5", "lora")
    ids, mask = _prompts(model)
    encoder = model.get_encoder()
    forward = encoder.forward

    def narrow(input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
               output_hidden_states=None, return_dict=None):
        return forward(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                       output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                       return_dict=return_dict)

    seen = []
    handle = encoder.register_forward_pre_hook(lambda m, args, kwargs: seen.append(sorted(kwargs)),
                                               with_kwargs=True, prepend=True)
    encoder.forward = narrow
    try:
        out = _generate(model, ids, mask, adapter_names=NAMES, do_sample=False)
    finally:
        handle.remove()
        del encoder.forward
    assert seen and "adapter_names" not in seen[0]  # generate() did not pass them
    for row, name in enumerate(NAMES):
        assert torch.equal(out[row:row + 1], _alone(model, ids, mask, row, name, do_sample=False)), (row, name)


@pytest.mark.parametrize("method", ["lora", "prefix_tuning"])
@pytest.mark.parametrize("arch", list(MORE))
def test_other_architectures(arch, method):
    test_greedy_equals_each_row_alone(arch, method)
    test_beam_search_equals_each_row_alone(arch, method)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_task_ids_lists_follow_the_beams(arch):
    """MultiTask's per-row `task_ids` as a list (transformers expands only tensors): each row's beams are its task's."""
    model = _model(arch, "lora")
    ids, mask = _prompts(model)
    model.set_active_adapters(MultiTask("a", "b", "c"))
    tasks = [2, 0, 1, 1, 0, 2]
    options = dict(do_sample=False, num_beams=3, num_return_sequences=2)
    out = _generate(model, ids, mask, task_ids=tasks, **options)
    for row, task in enumerate(tasks):
        assert torch.equal(out[2 * row:2 * row + 2], _alone(model, ids, mask, row, "abc"[task], **options)), row
