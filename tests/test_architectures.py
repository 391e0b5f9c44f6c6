"""Every built-in architecture x every method on tiny models: forward + backward, identity inits, merging,
parameter counts; plus the architecture-specific placements (fused q/k/v slices, LLaMA FFN, cross-attention)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

import adapterkit
from adapterkit import AdapterError

import archs

METHODS = {
    "seq_bn": "seq_bn",
    "double_seq_bn": "double_seq_bn",
    "par_bn": "par_bn",
    "scaled_par_bn": "scaled_par_bn",
    "seq_bn_inv": "seq_bn_inv",
    "double_seq_bn_inv": "double_seq_bn_inv",
    "lora": "lora",
    "lora_full": "lora[r=4,alpha=16,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "ia3": "ia3",
    "ia3_full": "ia3[attn_matrices=['q','k','v','o'],output_lora=True]",
    "loha": "loha[r=2]",
    "loha_full": "loha[r=2,attn_matrices=['q','k','v','o'],intermediate=True,output=True]",
    "lokr": "lokr",
    "lokr_full": "lokr[r=1,decompose_both=True,attn_matrices=['q','k','v','o'],intermediate=True,output=True]",
    "lora_pissa": "lora[r=4,init_weights='pissa',attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "dora": "dora",
    "dora_full": "dora[r=4,alpha=16,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "dora_peft": "dora[r=4,alpha=12,dora_semantics='peft',attn_matrices=['q','k','v'],output_lora=True]",
    "vera": "vera[r=4]",
    "vera_full": "vera[r=4,alpha=8,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "dvora": "dvora[r=4,alpha=8,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "loreft": "loreft[suffix_positions=1,r=2]",
    "noreft": "noreft[suffix_positions=2,tied_weights=True]",
    "direft": "direft[suffix_positions=1]",

    # a lone MTL-LoRA runs as its task's adapter, without task_ids (as in the `adapters` package)
    "mtl_lora": "mtl_lora[r=4,n_up_projection=2]",
    "mtl_lora_full": "mtl_lora[r=2,n_up_projection=3,task_specific_matrix_type='linear',"
                     "attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",

}
WEIGHT_UPDATES = ["loha", "loha_full", "lokr", "lokr_full"]  # peft's LyCORIS family (nn/delta.py)
DORA = ["dora", "dora_full", "dora_peft"]
VERA = ["vera", "vera_full", "dvora"]  # b starts at 0 (DvoRA: and m at ||W||): the identity
MTL_LORA = ["mtl_lora", "mtl_lora_full"]
IDENTITY = (["par_bn", "scaled_par_bn", "lora", "lora_full", "ia3", "ia3_full"] + WEIGHT_UPDATES + DORA + VERA
            + MTL_LORA)
MERGEABLE = ["lora", "lora_full", "ia3", "ia3_full"] + WEIGHT_UPDATES + DORA + VERA + MTL_LORA
ARCHS = list(archs.ARCHS)
# + the named interfaces of issue 17: a sample by default, all of them as slow
SWEEP = ARCHS + [a if a in archs.NAMED_SAMPLE else pytest.param(a, marks=pytest.mark.slow) for a in archs.NAMED]


@functools.lru_cache(maxsize=None)
def _base(arch):
    return archs.model(arch)


def fresh(arch):
    return adapterkit.init(copy.deepcopy(_base(arch)))


def first(output) -> torch.Tensor:
    return output[0]


def forward(model, arch):
    with torch.no_grad():
        return first(model(**archs.inputs(arch)))


def randomize(module, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("arch", SWEEP)
def test_forward_backward_reaches_every_adapter_parameter(arch, method):
    model = fresh(arch)
    base = forward(model, arch)

    def size():  # VeRA's frozen pair too: saved and counted (as the `adapters` package counts it); not other
        # buffers (torch's orthogonal parametrization keeps a `base` buffer for ReFT)
        frozen = (b for n, b in model.named_buffers() if n.rsplit(".", 1)[-1] in ("vera_A", "vera_B"))
        return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in frozen)
    n_before = size()
    model.add_adapter("a", config=METHODS[method])
    added = size() - n_before
    model.train_adapter("a")
    assert model.adapter_summary(as_dict=True)[0]["#param"] == added > 0
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    head = {id(p) for name, p in model.named_parameters() if not name.startswith("adapterkit.")
            and p.requires_grad}
    assert trainable - head == {id(p) for p in model.adapterkit["a"].parameters()}
    assert not head  # bare models: nothing of the base model trains
    randomize(model.adapterkit["a"])  # so no zero-initialised matrix blocks a gradient
    model.eval()
    out = first(model(**archs.inputs(arch)))
    assert (out - base).abs().max() > 1e-3
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    for name, p in model.adapterkit["a"].named_parameters():
        assert p.grad is not None, f"{name} is not used in the forward pass: not wired into the model"
    # (a unit of a 2-wide relu bottleneck may be dead on these few tokens; each adapter as a whole must learn)
    for name, module in model.adapterkit["a"].named_modules():
        if name.count(".") == 2 or name == "shared.invertible":
            assert sum(p.grad.abs().sum() for p in module.parameters()) > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("method", IDENTITY)
@pytest.mark.parametrize("arch", SWEEP)
def test_identity_methods_leave_outputs_unchanged(arch, method):
    model = fresh(arch)
    before = forward(model, arch)
    model.add_adapter("a", config=METHODS[method], set_active=True)
    assert torch.equal(forward(model, arch), before)


@pytest.mark.parametrize("method", MERGEABLE)
@pytest.mark.parametrize("arch", SWEEP)
def test_merge_equals_unmerged_and_reset_restores(arch, method):
    model = fresh(arch)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    base = forward(model, arch)
    model.add_adapter("a", config=METHODS[method], set_active=True)
    randomize(model.adapterkit["a"], scale=0.1)
    unmerged = forward(model, arch)
    assert (unmerged - base).abs().max() > 1e-3
    model.merge_adapter("a")
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    atol = 1e-5 * max(1.0, unmerged.abs().max().item())  # float32 rounding grows with the outputs (Gemma 2's scale)
    torch.testing.assert_close(forward(model, arch), unmerged, atol=atol, rtol=0)
    model.reset_adapter("a")
    now = model.state_dict()
    assert max((now[k] - v).abs().max().item() for k, v in weights.items()) <= 1e-6
    torch.testing.assert_close(forward(model, arch), unmerged, atol=atol, rtol=0)


@pytest.mark.parametrize("arch", SWEEP)
def test_delete_restores_the_plain_model(arch):
    model = fresh(arch)
    before = forward(model, arch)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    for i, method in enumerate(["double_seq_bn_inv", "lora_full", "ia3"]):
        model.add_adapter(f"a{i}", config=METHODS[method])
    model.set_active_adapters(["a0", "a1", "a2"])
    randomize(model.adapterkit)
    assert not torch.equal(forward(model, arch), before)
    for i in range(3):
        model.delete_adapter(f"a{i}")
    assert torch.equal(forward(model, arch), before)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert all("forward" not in m.__dict__ for m in model.modules())


# -- placements ------------------------------------------------------------------------------------------
def _merged_delta(model, name, module):
    """The change merging adapter `name` makes to `module.weight`."""
    w0 = module.weight.detach().clone()
    model.merge_adapter(name)
    delta = module.weight.detach() - w0
    model.reset_adapter(name)
    return delta


@pytest.mark.parametrize("matrix", ["q", "k", "v"])
def test_gpt2_fused_c_attn_slices_are_q_k_v(matrix):
    model = fresh("gpt2")
    model.add_adapter("a", config=f"lora[attn_matrices=['{matrix}']]")
    randomize(model.adapterkit["a"])
    c_attn = model.h[0].attn.c_attn
    delta = _merged_delta(model, "a", c_attn)  # Conv1D weight: (in, out), out = [q | k | v]
    parts = delta.split(model.config.n_embd, dim=1)
    index = "qkv".index(matrix)
    assert all((p.abs().max() > 0) == (i == index) for i, p in enumerate(parts))


@pytest.mark.parametrize("matrix", ["q", "k", "v"])
def test_deberta_fused_in_proj_slices_follow_its_per_head_split(matrix):
    model = fresh("deberta")
    model.add_adapter("a", config=f"lora[attn_matrices=['{matrix}']]")
    randomize(model.adapterkit["a"])
    attention = model.encoder.layer[0].attention.self
    delta = _merged_delta(model, "a", attention.in_proj)  # (3 * hidden, in)
    # split the weight rows exactly as DeBERTa splits in_proj's output into q, k, v
    q, k, v = attention.transpose_for_scores(delta.t()[None]).chunk(3, dim=-1)
    index = "qkv".index(matrix)
    assert all((p.abs().max() > 0) == (i == index) for i, p in enumerate((q, k, v)))


def _targets(model, name):
    state = model.adapter_state
    return {location: state.sites[(layer, location)].target.module
            for (layer, location), _ in state.layer_modules(name) if layer == 0}


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_llama_ffn_intermediate_is_up_and_gate_output_is_down(arch):
    model = fresh(arch)
    mlp = model.layers[0].mlp
    model.add_adapter("i", config="lora[selfattn_lora=False,intermediate_lora=True]")
    model.add_adapter("o", config="lora[selfattn_lora=False,output_lora=True]")
    assert _targets(model, "i") == {"intermediate": mlp.up_proj, "intermediate_1": mlp.gate_proj}
    assert _targets(model, "o") == {"output": mlp.down_proj}


def test_t5_gated_ffn_intermediate_is_wi_0_and_wi_1():
    model = fresh("t5-gated")
    model.add_adapter("i", config="ia3")
    ffn = model.encoder.block[0].layer[-1].DenseReluDense
    targets = _targets(model, "i")
    assert targets["intermediate"] is ffn.wi_0 and targets["intermediate_1"] is ffn.wi_1


@pytest.mark.parametrize("arch", archs.SEQ2SEQ)
def test_encoder_decoder_numbering_and_cross_attention(arch):
    model = fresh(arch)
    n_enc = len(model.encoder.layers if arch == "bart" else model.encoder.block)
    n = len(model.adapter_state.layers)
    assert n == 2 * n_enc
    model.add_adapter("h", config="double_seq_bn[cross_adapter=True]")
    layers = {}
    for (layer, location), _ in model.adapter_state.layer_modules("h"):
        layers.setdefault(location, set()).add(layer)
    assert layers["mh_adapter"] == layers["output_adapter"] == set(range(n))
    assert layers["cross_adapter"] == set(range(n_enc, n))  # decoder layers only
    model.add_adapter("l", config="lora")
    locations = {}
    for (layer, location), _ in model.adapter_state.layer_modules("l"):
        locations.setdefault(location, set()).add(layer)
    assert locations == {"attn_q": set(range(n)), "attn_v": set(range(n)),
                         "cross_attn_q": set(range(n_enc, n)), "cross_attn_v": set(range(n_enc, n))}
    # leave_out uses the same global numbering
    model.add_adapter("x", config=f"seq_bn[cross_adapter=True,leave_out=[0,{n_enc}]]")
    placed = {(layer, loc) for (layer, loc), _ in model.adapter_state.layer_modules("x")}
    assert not any(layer in (0, n_enc) for layer, _ in placed) and (n_enc + 1, "cross_adapter") in placed


@pytest.mark.parametrize("arch", archs.SEQ2SEQ)
def test_cross_adapter_changes_only_the_decoder(arch):
    model = fresh(arch)
    model.add_adapter("c", config="seq_bn[output_adapter=False,cross_adapter=True]", set_active=True)
    randomize(model.adapterkit["c"])
    batch = archs.inputs(arch)
    with torch.no_grad():
        out = model(**batch)
        with adapterkit.AdapterSetup(None):
            base = model(**batch)
    assert torch.equal(out.encoder_last_hidden_state, base.encoder_last_hidden_state)
    assert (out.last_hidden_state - base.last_hidden_state).abs().max() > 1e-3


def test_cross_adapter_on_a_model_without_cross_attention_is_a_clear_error():
    model = fresh("bert")
    with pytest.raises(AdapterError, match="cross_adapter"):
        model.add_adapter("c", config="seq_bn[cross_adapter=True]")
    assert "c" not in model.adapters_config


def test_original_ln_after_false_where_the_layer_applies_its_own_norm():
    """DistilBERT norms `sublayer + residual` in its own forward: that norm is skipped for such an adapter (exact
    against the `adapters` package: tests/test_adapterplus.py), alone or in a Stack; other setups say so."""
    from adapterkit import BatchSplit
    model = fresh("distilbert")
    model.add_adapter("a", config="seq_bn[original_ln_after=False]", set_active=True)
    model.add_adapter("b", config="seq_bn")
    randomize(model.adapterkit["a"])
    out = forward(model, "distilbert")
    model.set_active_adapters(["b", "a"])
    forward(model, "distilbert")
    model.set_active_adapters(BatchSplit("a", "b", batch_sizes=[1, 2]))
    with pytest.raises(AdapterError, match="original_ln_after=False at output_adapter of layer 0 runs alone or in "
                                           "a Stack here"):
        forward(model, "distilbert")
    model.set_active_adapters("a")
    assert torch.equal(forward(model, "distilbert"), out)  # the refusal left no state behind


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_pre_ln_original_ln_after_false_drops_the_residual_as_the_anchors(arch):
    # the anchors' bottleneck_layer_forward(h, x, None) returns the adapter output without `+ x` in this case
    model = fresh(arch)
    model.add_adapter("a", config="seq_bn[original_ln_after=False]", set_active=True)
    randomize(model.adapterkit["a"])
    site = model.adapter_state.sites[(0, "output_adapter")]
    seen = {}

    def keep(key, value):
        seen.setdefault(key, value[0] if isinstance(value, tuple) else value)

    layer = model.adapter_state.layers[0]
    handles = [layer.register_forward_hook(lambda m, a, o: keep("out", o))]
    with torch.no_grad():
        model(**archs.inputs(arch))
    # the FFN sublayer's input x and output h without the adapter (the same as with it: nothing runs before)
    handles += [site.residual.register_forward_pre_hook(lambda m, a: keep("x", a)),
                site.output.register_forward_hook(lambda m, a, o: keep("h", o))]
    with torch.no_grad(), adapterkit.AdapterSetup(None):
        model(**archs.inputs(arch))
    for handle in handles:
        handle.remove()
    adapter = model.adapterkit["a"].layers["0"]["output_adapter"]
    with torch.no_grad():
        expected = adapter.delta(seen["h"] + seen["x"]) + seen["h"]  # Pfeiffer without the final residual add
    torch.testing.assert_close(seen["out"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "vit"])
def test_invertible_adapter_is_inverted_before_the_lm_head(arch):
    import transformers as tf
    kind = "seq2seq" if arch in archs.SEQ2SEQ else "causal" if arch in archs.DECODERS else "masked"
    auto = {"seq2seq": tf.AutoModelForSeq2SeqLM, "causal": tf.AutoModelForCausalLM,
            "masked": tf.AutoModelForMaskedLM}[kind]
    model = adapterkit.init(archs.model(arch, cls=auto._model_mapping[type(archs.config(arch))]))
    model.add_adapter("a", config="seq_bn_inv", set_active=True)
    calls = []
    inv = model.adapterkit["a"].shared["invertible"]
    inv.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs.get("rev", False)), with_kwargs=True)
    with torch.no_grad():
        logits = model(**archs.inputs(arch)).logits
    assert logits.shape[-1] == archs.VOCAB
    assert calls == [False, True]  # once forward after the embeddings, once inverse before the head


@pytest.mark.parametrize("arch", ["gpt2", "llama", "t5", "bart", "distilbert"])
def test_gradient_checkpointing_gives_the_same_gradients(arch):
    import transformers as tf
    auto = tf.AutoModelForSeq2SeqLM if arch in archs.SEQ2SEQ else (
        tf.AutoModelForCausalLM if arch in archs.DECODERS else tf.AutoModelForMaskedLM)
    grads, calls = [], []
    for checkpointing in (False, True):
        model = adapterkit.init(archs.model(arch, cls=auto._model_mapping[type(archs.config(arch))]))
        model.add_adapter("a", config="double_seq_bn")
        model.add_adapter("b", config="lora")
        model.train_adapter(["a", "b"])
        randomize(model.adapterkit, scale=0.1)
        if checkpointing:
            # transformers renamed gradient_ to activation_checkpointing_enable after 5.17; both are supported
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable({"use_reentrant": False})
        count = []
        model.adapterkit["b"].layers["0"]["attn_q"].register_forward_pre_hook(lambda m, a: count.append(1))
        batch = archs.inputs(arch)
        labels = batch["decoder_input_ids"] if arch in archs.SEQ2SEQ else batch["input_ids"]
        model(**batch, labels=labels).loss.backward()
        grads.append({n: p.grad for n, p in model.adapterkit.named_parameters()})
        calls.append(len(count))
    assert calls == [1, 2]  # the layer (and its adapters) ran again in the backward pass
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=0)


def _task_models():
    import transformers as tf
    out = [(arch, tf.AutoModelForSequenceClassification._model_mapping[type(archs.config(arch))])
           for arch in ARCHS if arch not in archs.SEQ2SEQ and arch != "vit"]
    return out + [("bart", tf.BartForCausalLM), ("t5", tf.T5EncoderModel), ("vit", tf.ViTForImageClassification)]


@pytest.mark.parametrize("arch,cls", _task_models(), ids=lambda v: getattr(v, "__name__", v))
def test_task_models_and_partial_stacks(arch, cls):
    model = adapterkit.init(archs.model(arch, cls=cls, pad_token_id=0))
    batch = archs.inputs(arch)
    if cls.__name__ in ("BartForCausalLM", "T5EncoderModel"):
        batch.pop("decoder_input_ids")
    with torch.no_grad():
        before = model(**batch)[0]
    model.add_adapter("h", config="double_seq_bn")
    model.add_adapter("l", config=METHODS["lora_full"])
    model.train_adapter(["h", "l"])
    randomize(model.adapterkit)
    n_layers = len(model.adapter_state.layers)
    assert {layer for (layer, _), _ in model.adapter_state.layer_modules("h")} == set(range(n_layers))
    out = model(**batch)[0]
    assert not torch.equal(out.detach(), before)
    out.float().pow(2).mean().backward()
    unused = {n for n, p in model.adapterkit.named_parameters() if p.grad is None}
    # BartForCausalLM's decoder keeps its (here unused) cross-attention, and LoRA there, for encoder outputs
    assert all(".cross_attn_" in n for n in unused) and (not unused or cls.__name__ == "BartForCausalLM")


PREFIX_METHODS = ["prefix_tuning[prefix_length=3,bottleneck_size=8]", "prefix_tuning_flat[prefix_length=2]", "mam",
                  "unipelt"]
# DeBERTa's attention bypasses transformers' registry: its prefixes go through hooks (sites/own_attention.py)


@pytest.mark.parametrize("method", PREFIX_METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_methods_on_every_architecture(arch, method):
    model = fresh(arch)
    base = forward(model, arch)
    impls = {id(m.config): m.config._attn_implementation for m in model.modules() if hasattr(m, "config")}
    model.add_adapter("a", config=method)
    model.train_adapter("a")
    randomize(model.adapterkit["a"])
    model.eval()
    out = first(model(**archs.inputs(arch)))
    assert (out - base).abs().max() > 1e-3
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    for name, p in model.adapterkit["a"].named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    model.delete_adapter("a")
    assert torch.equal(forward(model, arch), base)
    assert {id(m.config): m.config._attn_implementation for m in model.modules() if hasattr(m, "config")} == impls
