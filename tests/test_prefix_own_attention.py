"""Prefix tuning on attention modules that compute their scores themselves, through the "rows" own-attention kind
(interfaces/prefix_rows.py) the automatic interface detects and checks: BERT-style eager attention (MegatronBERT),
a causal decoder continuing from a KV cache (XGLM), fused per-head q/k/v with alibi (Bloom), a fused contiguous Conv1D
with a causal buffer (OpenAI GPT) and an inverted boolean mask (MPT: True = masked). Results are compared with attention computed by hand, with each row alone
against a padded batch, and with the adapter inactive; models the kind does not fit are refused with the reason."""

from __future__ import annotations

import math

import pytest
import torch
import transformers as tf

import adapterkit
from adapterkit import AdapterError
from adapterkit.interfaces.base import resolve
from adapterkit.interfaces.infer import infer_interface

from tiny_configs import tiny_config

PREFIX = "prefix_tuning[prefix_length=3,flat=True]"


def _model(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    return tf.AutoModel.from_config(tiny_config(model_type)).eval()


def _prefixed(model_type: str):
    model = _model(model_type)
    interface = infer_interface(model)
    adapterkit.init(model, interface=interface)
    model.add_adapter("a", config=PREFIX)
    model.set_active_adapters("a")
    with torch.no_grad():
        for p in model.adapterkit["a"].parameters():
            p.normal_(0, 1.0)
    return model, interface


def _prefix_module(model):
    return next(m for m in model.adapterkit["a"].modules() if hasattr(m, "key_values"))


def _ids(model, batch=2, seq=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, min(model.config.vocab_size, 90), (batch, seq), generator=g)


def test_kinds_are_detected_and_recorded():
    interface = infer_interface(_model("megatron-bert"))
    own = interface.own_attention
    assert (own.kind, own.key, own.value, own.mask, own.slices) == ("rows", "key", "value", "attention_mask", None)
    bloom = infer_interface(_model("bloom")).own_attention
    assert bloom.kind == "rows" and bloom.key == "query_key_value"
    assert [(s.index, s.per_head) for s in bloom.slices] == [(1, "num_attention_heads"), (2, "num_attention_heads")]
    assert bloom.biases == ("alibi",) and bloom.rows == ("residual",)  # alibi: zero over the prefix
    assert "OwnAttention(kind='rows'" in infer_interface(_model("bloom")).to_source()
    assert infer_interface(_model("mpt")).own_attention.mask_attend is False  # masked_fill(mask): True = hidden


def test_megatron_bert_equals_attention_by_hand():
    """Layer 0's context with the prefix = softmax([q pk^T, q k^T] / sqrt(d) + [0, mask]) [pv; v], by hand."""
    model, interface = _prefixed("megatron-bert")
    ids = _ids(model)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # row 1 padded
    attention = resolve(model.base_model.get_submodule(interface.layers[0])[0], interface.self_attention)
    seen = {}
    attention.register_forward_pre_hook(lambda m, args, kwargs: seen.update(h=args[0] if args else
                                        kwargs["hidden_states"]), with_kwargs=True, prepend=True)  # (before ours)
    attention.register_forward_hook(lambda m, args, out: seen.update(out=out[0]))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        h = seen["h"]
        b, s, _ = h.shape
        heads = model.config.num_attention_heads
        d = h.shape[-1] // heads
        split = lambda x: x.view(b, -1, heads, d).transpose(1, 2)  # noqa: E731
        pk, pv = _prefix_module(model).key_values(0)  # (heads, P, d)
        q = split(attention.query(h))
        k = torch.cat([pk.expand(b, -1, -1, -1), split(attention.key(h))], dim=2)
        v = torch.cat([pv.expand(b, -1, -1, -1), split(attention.value(h))], dim=2)
        additive = torch.cat([torch.zeros(b, pk.shape[1]), (1.0 - mask.float()) * torch.finfo(h.dtype).min], dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + additive[:, None, None, :]
        reference = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, heads * d)
    assert seen["out"].shape == reference.shape
    assert torch.allclose(seen["out"], reference, atol=1e-5)
    model.set_active_adapters(None)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert not torch.allclose(seen["out"], reference, atol=1e-3)  # (the prefix matters)


@pytest.mark.parametrize("model_type", ["megatron-bert", "xglm", "bloom", "openai-gpt", "mpt"])
def test_each_row_alone_equals_the_padded_batch(model_type):
    model, _ = _prefixed(model_type)
    ids = _ids(model)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    kwargs = {"use_cache": False} if "use_cache" in model.forward.__code__.co_varnames else {}
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, **kwargs)[0]
        for row, n in ((0, 7), (1, 5)):
            alone = model(input_ids=ids[row:row + 1, :n], attention_mask=mask[row:row + 1, :n], **kwargs)[0]
            assert torch.allclose(batch[row, :n], alone[0], atol=1e-5), (model_type, row)
        model.set_active_adapters(None)
        plain = model(input_ids=ids, attention_mask=mask, **kwargs)[0]
    assert (batch - plain)[0].abs().max() > 1e-3  # the prefix changes the outputs...
    base = _model(model_type)
    with torch.no_grad():  # ...and, inactive, leaves nothing behind
        assert torch.allclose(plain, base(input_ids=ids, attention_mask=mask, **kwargs)[0], atol=1e-6)


def test_prefix_of_copies_leaves_outputs_unchanged():
    """A prefix holding a copy of a one-token sequence's own key and value changes nothing: softmax over [k; k]
    with [v; v] is softmax over [k] with [v] (every weight halved, every value counted twice)."""
    model, _ = _prefixed("megatron-bert")
    ids = _ids(model, batch=1, seq=1)
    flat = _prefix_module(model)
    base = _model("megatron-bert")
    with torch.no_grad():
        expected = base(input_ids=ids)[0]
        hidden = base.embeddings(input_ids=ids)
        block = flat.control_trans.view(flat.prefix_length, flat.n_layers * 2, -1)
        for i, layer in enumerate(base.encoder.layer):
            x = layer.attention.ln(hidden)  # (MegatronBERT: pre-LN attention)
            block[:, 2 * i] = layer.attention.self.key(x)[0, 0]  # (the same key / value at all 3 positions)
            block[:, 2 * i + 1] = layer.attention.self.value(x)[0, 0]
            out = layer(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
        got = model(input_ids=ids)[0]
        flat.control_trans.add_(0.5)  # (not a test that cannot fail: another prefix changes the output)
        other = model(input_ids=ids)[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(other, expected, atol=1e-3)


@pytest.mark.parametrize("model_type", ["xglm", "bloom"])
def test_kv_cache_continuation_equals_the_full_forward(model_type):
    """Continuing from a DynamicCache: the new rows attend [cache; prefix; new] and the cache keeps real positions
    only (the prefix rows are cut out after each call), so positions and masks the model derives from it hold."""
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()
    adapterkit.init(model, interface=infer_interface(model))
    model.add_adapter("a", config=PREFIX)
    model.set_active_adapters("a")
    with torch.no_grad():
        for p in model.adapterkit["a"].parameters():
            p.normal_(0, 1.0)
    ids = _ids(model, batch=2, seq=7)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # (left padding, as generate() pads a batch)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        first = model(input_ids=ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
        cache = first.past_key_values  # (the output field keeps its name)
        assert cache.get_seq_length() == 4  # (no prefix rows left in it)
        step = model(input_ids=ids[:, 4:6], attention_mask=mask[:, :6], cache=cache, use_cache=True)
        last = model(input_ids=ids[:, 6:], attention_mask=mask, cache=cache, use_cache=True)
        assert cache.get_seq_length() == 7
        model.set_active_adapters(None)
        plain = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    got = torch.cat([first.logits, step.logits, last.logits], dim=1)
    torch.testing.assert_close(got[0], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, 2:], full[1, 2:], atol=1e-5, rtol=1e-5)  # (the padded positions aside)
    assert (full - plain)[0].abs().max() > 1e-3


def test_a_static_cache_is_refused():
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(tiny_config("xglm")).eval()
    adapterkit.init(model, interface=infer_interface(model))
    model.add_adapter("a", config=PREFIX)
    model.set_active_adapters("a")
    ids = _ids(model, batch=1)
    cache = tf.StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad(), pytest.raises(AdapterError, match="DynamicCache"):
        model(input_ids=ids, cache=cache, use_cache=True)


@pytest.mark.parametrize("model_type, why", [
    ("roformer", "sinusoidal_pos"),  # rotary position encoding inside the attention
    ("convbert", "not softmax attention"),  # a convolution over the sequence mixed into the attention
    ("yoso", "not softmax attention"),  # LSH-approximated attention
])
def test_modules_the_kind_does_not_fit_are_refused(model_type, why):
    model = _model(model_type)
    interface = infer_interface(model)
    assert interface.own_attention is None and why in interface.unresolved["own_attention"]
    adapterkit.init(model, interface=interface)
    with pytest.raises(AdapterError, match="own_attention: .*" + why):
        model.add_adapter("a", config=PREFIX)


def test_masks_of_each_convention_get_seen_prefix_columns():
    from adapterkit.interfaces.prefix_rows import widen_mask

    minimum = torch.finfo(torch.float32).min
    additive = torch.tensor([[0.0, 0.0, minimum]]).view(1, 1, 1, 3)  # (batch, 1, 1, keys), key 2 padded
    visible = torch.tensor([[True, False]])  # (batch, prefix): per-row routing hides prefix position 1
    assert widen_mask(additive, 3, 2, visible).flatten().tolist() == [0.0, minimum, 0.0, 0.0, minimum]
    assert widen_mask(additive, 3, 2, None, seen=0.0).flatten().tolist() == [0.0, 0.0, 0.0, 0.0, minimum]
    multiplicative = torch.tensor([[1.0, 1.0, 0.0]])  # (batch, keys), 1 = seen
    assert widen_mask(multiplicative, 3, 1, visible[:, :1]).tolist() == [[1.0, 1.0, 1.0, 0.0]]
    inverted = torch.ones(3, 3, dtype=torch.bool).triu(1)[None, None]  # MPT: True = masked, causal
    widened = widen_mask(inverted, 3, 2, None, seen=False)
    assert widened.shape == (1, 1, 5, 5) and not widened[0, 0, 2:, :2].any()  # real rows see the prefix
    assert torch.equal(widened[0, 0, 2:, 2:], inverted[0, 0])  # and keep their own mask


def test_stacks_of_both_kinds_get_their_own_sites():
    """GIT: its vision layers call the attention registry, its text layers compute attention themselves; each
    stack's attention gets the site of its kind."""
    model = _model("git")
    interface = infer_interface(model)
    assert interface.self_attention == "self_attn|attention.self"
    assert interface.own_attention.kind == "rows" and interface.own_attention.paths == ("attention.self",)
    adapterkit.init(model, interface=interface)
    model.add_adapter("a", config=PREFIX)
    state = model.adapter_state
    kinds = {}
    for (layer_id, kind), site in state.sites.items():
        if kind == "prefix":
            stack = next(s for s, first, count in state.stacks if first <= layer_id < first + count)
            kinds.setdefault(stack, set()).add(type(site).__name__)
    assert kinds == {"image_encoder.vision_model.encoder.layers": {"AttentionSite"},
                     "encoder.layer": {"RowsPrefixSite"}}
