"""The fused LoRA fast path (methods/lora_fused.py): taken exactly where it is eligible, and there it computes what
the hook path computes (outputs, and gradients of the input and of A / B), in train and eval mode."""

from __future__ import annotations

import copy

import pytest
import torch

import adapterkit
import archs
from adapterkit import AdapterSetup, BatchSplit, LoRAConfig, Parallel, Stack
from adapterkit.methods.lora import fused as sites
from adapterkit.methods.lora import fused as lora_fused

# every projection: on GPT-2 q / v are slices of the fused c_attn (hook path), o / c_fc / c_proj whole Conv1Ds
ALL = dict(r=4, alpha=8, attn_matrices=["q", "v", "o"], intermediate_lora=True, output_lora=True)
WHOLE_SITES = {"bert": 5, "gpt2": 3, "llama": 6}  # fusable sites per layer with ALL


@pytest.fixture
def calls(monkeypatch):
    """How many times the fused kernels ran (with or without the autograd Function) since `calls.clear()`."""
    seen = []
    compute = lora_fused.compute

    def counting(*args):
        seen.append(1)
        return compute(*args)

    monkeypatch.setattr(lora_fused, "compute", counting)
    return seen


@pytest.fixture
def hook_path():
    """A context in which nothing is fused (the reference: the module's forward, then the composition)."""
    class Unfused:
        def __enter__(self):
            self.patch = pytest.MonkeyPatch()
            self.patch.setattr(sites, "fused_args", lambda *a: None)

        def __exit__(self, *exc):
            self.patch.undo()
    return Unfused()


def build(arch="bert", configs=None, train=None, seed=0, **overrides):
    """Adapters with randomised weights; `train`: the setup train_adapter activates (and freezes the base for)."""
    model = adapterkit.init(archs.model(arch, **overrides))
    configs = configs if configs is not None else {"l": LoRAConfig(**ALL)}
    for name, config in configs.items():
        model.add_adapter(name, config=config)
    if train is not None:
        model.train_adapter(train)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def embeds(model, arch, batch=3):
    """inputs_embeds (requiring a gradient) and the attention mask of archs.inputs."""
    inputs = archs.inputs(arch, batch=batch)
    with torch.no_grad():
        x = model.get_input_embeddings()(inputs["input_ids"])
    return {"inputs_embeds": x.requires_grad_(True), "attention_mask": inputs["attention_mask"]}


def step(model, inputs, **kwargs):
    """Output and the gradients of the adapter weights (and of inputs_embeds, if given) after a backward."""
    model.zero_grad(set_to_none=True)
    x = inputs.get("inputs_embeds")
    if x is not None:
        x.grad = None
    out = model(**inputs, **kwargs).last_hidden_state
    loss(out).backward()
    grads = {n: p.grad.clone() for n, p in model.adapterkit.named_parameters() if p.grad is not None}
    if x is not None:
        grads["inputs_embeds"] = x.grad.clone()
    return out.detach(), grads


def loss(out):
    """Of order 1, with gradients of order 0.1-1 (so that atol=1e-6 is a tight check); not a plain sum of squares,
    which a post-LN model's output makes nearly constant."""
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    return (out * weights).pow(2).mean()


def assert_same(a, b, atol=1e-6, rtol=1e-6):
    """atol=1e-6, and rtol=1e-6 for the few gradients of order 1-10 (llama's input gradient): float32 rounding of
    the two summation orders is ~1e-7 relative; a wrong factor or term is far above either."""
    torch.testing.assert_close(a[0], b[0], atol=atol, rtol=rtol)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("x_grad", [False, True], ids=["ids", "embeds"])
def test_fused_equals_the_hook_path(arch, mode, x_grad, calls, hook_path):
    model = build(arch, train="l")
    model.train(mode == "train")
    inputs = embeds(model, arch) if x_grad else archs.inputs(arch)
    fused = step(model, inputs)
    assert len(calls) == WHOLE_SITES[arch] * archs.L
    calls.clear()
    with hook_path:
        reference = step(model, inputs)
    assert not calls
    assert_same(fused, reference)
    assert {n for n in fused[1] if "lora_" in n} == {n for n, p in model.adapterkit.named_parameters()}


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_fused_output_is_not_a_view_and_inference_mode_works(arch, calls, hook_path):
    model = build(arch, train="l")
    inputs = archs.inputs(arch)
    with torch.inference_mode():
        out = model(**inputs).last_hidden_state
    assert len(calls) == WHOLE_SITES[arch] * archs.L
    with hook_path, torch.no_grad():
        torch.testing.assert_close(out, model(**inputs).last_hidden_state, atol=1e-6, rtol=0)
    # a caller may modify the projection's output in place (a custom Function must not return a view for that)
    module = model.encoder.layer[0].attention.self.query if arch == "bert" else (
        model.h[0].attn.c_proj if arch == "gpt2" else model.layers[0].self_attn.q_proj)
    x = torch.randn(2, 3, archs.H, requires_grad=True)
    y = module(x)
    y.mul_(2)
    y.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_double_backward_matches_the_hook_path(arch, calls, hook_path):
    """In float64: second derivatives through attention amplify float32 rounding differences of the two paths."""
    model = build(arch, train="l").double()
    inputs = embeds(model, arch, batch=2)
    inputs["inputs_embeds"] = inputs["inputs_embeds"].detach().double().requires_grad_(True)
    lora = model.adapterkit["l"].layers["1"]["attn_v"]

    def penalty():  # gradient penalties: d/dA, d/dB of |d loss / d x|^2 + |d loss / d B|^2
        out = loss(model(**inputs).last_hidden_state)
        gx, gb = torch.autograd.grad(out, [inputs["inputs_embeds"], lora.lora_B], create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum() + gb.pow(2).sum(), [lora.lora_A, lora.lora_B])

    fused = penalty()
    assert calls
    with hook_path:
        for got, expected in zip(fused, penalty()):
            assert expected.abs().max() > 1e-3
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def _not_fused_cases():
    lora = dict(ALL)
    return {
        "gated": ({"l": LoRAConfig(**lora, use_gating=True)}, "l", {}),
        "dropout_train": ({"l": LoRAConfig(**lora, dropout=0.1)}, "l", {}),
        "two_adapters": ({"a": LoRAConfig(**lora), "b": LoRAConfig(**lora)}, Stack("a", "b"), {}),
        "parallel": ({"a": LoRAConfig(**lora), "b": LoRAConfig(**lora)}, Parallel("a", "b"), {}),
        "batch_split": ({"a": LoRAConfig(**lora), "b": LoRAConfig(**lora)}, BatchSplit("a", "b", batch_sizes=[1, 2]),
                        {}),
        "batch_split_one": ({"a": LoRAConfig(**lora), "b": "seq_bn"}, BatchSplit("a", "b", batch_sizes=[1, 2]), {}),
        "adapter_names": ({"a": LoRAConfig(**lora)}, None, {"adapter_names": ["a", None, "a"]}),
        "ia3": ({"i": "ia3"}, "i", {}),
        "gpt2_q_v_slices": ({"l": "lora"}, "l", {}),
    }


@pytest.mark.parametrize("case", list(_not_fused_cases()))
def test_not_fused(case, calls):
    configs, setup, kwargs = _not_fused_cases()[case]
    arch = "gpt2" if case == "gpt2_q_v_slices" else "bert"
    model = build(arch, configs, train=setup or "a")
    model.set_active_adapters(setup)
    before = len(calls)
    out = model(**archs.inputs(arch), **kwargs).last_hidden_state
    out.sum().backward()
    assert len(calls) == before == 0


def test_dropout_is_fused_in_eval_mode_only(calls, hook_path):
    model = build("bert", {"l": LoRAConfig(**ALL, dropout=0.1)}, train="l")
    inputs = archs.inputs("bert")
    model.train()
    step(model, inputs)
    assert not calls
    model.eval()
    fused = step(model, inputs)
    assert len(calls) == WHOLE_SITES["bert"] * archs.L
    with hook_path:
        assert_same(fused, step(model, inputs))


def test_stack_with_one_lora_here_is_fused(calls, hook_path):
    """A Stack of names leaves one plain LoRA at each projection (the bottleneck runs at its own sites)."""
    model = build("bert", {"l": LoRAConfig(**ALL), "a": "seq_bn"}, train=Stack("l", "a"))
    model.train()
    inputs = embeds(model, "bert")
    fused = step(model, inputs)
    assert len(calls) == WHOLE_SITES["bert"] * archs.L
    with hook_path:
        assert_same(fused, step(model, inputs))


def test_setup_context_and_merge_decide_per_call(calls):
    model = build("bert", {"a": LoRAConfig(**ALL), "b": LoRAConfig(**ALL)})
    model.set_active_adapters(Stack("a", "b"))
    inputs = archs.inputs("bert")
    with torch.no_grad():
        model(**inputs)
        assert not calls
        with AdapterSetup("a"):
            model(**inputs)
        assert len(calls) == WHOLE_SITES["bert"] * archs.L
        calls.clear()
        model.set_active_adapters("a")
        model.merge_adapter("a")  # merged: no adapter runs at the projections
        merged = model(**inputs).last_hidden_state
        assert not calls
        assert "forward" in model.encoder.layer[0].attention.self.query.__dict__  # b is still there, unmerged
        model.delete_adapter("b")
        assert "forward" not in model.encoder.layer[0].attention.self.query.__dict__
        model.reset_adapter("a")
        torch.testing.assert_close(model(**inputs).last_hidden_state, merged, atol=1e-5, rtol=0)
        assert len(calls) == WHOLE_SITES["bert"] * archs.L


@pytest.mark.parametrize("what", ["weight", "bias", "all"])
def test_trainable_base_weights_take_the_hook_path(what, calls, hook_path):
    model = build("bert", train="l")
    model.train()
    query = model.encoder.layer[0].attention.self.query
    if what == "all":  # full fine-tuning plus LoRA
        model.requires_grad_(True)
    else:
        getattr(query, what).requires_grad_(True)
    inputs = archs.inputs("bert")
    fused = step(model, inputs)
    assert len(calls) == (0 if what == "all" else WHOLE_SITES["bert"] * archs.L - 1)
    assert query.weight.grad is not None or what == "bias"
    with hook_path:
        reference = step(model, inputs)
    assert_same(fused, reference)


def test_other_reasons_not_to_fuse(calls):
    model = build("bert", train="l")
    inputs = archs.inputs("bert")
    full = WHOLE_SITES["bert"] * archs.L
    with torch.no_grad():
        # a hook on the LoRA module itself: it has to be called
        handle = model.adapterkit["l"].layers["0"]["attn_q"].register_forward_hook(lambda *a: None)
        model(**inputs)
        assert len(calls) == full - 1
        handle.remove()
        calls.clear()
    # trainable base weights: only without grad mode (nothing is recorded then)
    model.requires_grad_(True)
    fused = step(model, inputs)
    assert not calls
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        assert len(calls) == full
        torch.testing.assert_close(out, fused[0], atol=1e-6, rtol=0)
        calls.clear()
        # autocast: the hook path casts as autocast says
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(**inputs)
        assert not calls
        # adapter weights in another dtype than the base weights: the hook path computes them in their own
        model.adapterkit["l"].layers["0"]["attn_q"].double()
        assert model(**inputs).last_hidden_state.dtype == torch.float32
        assert len(calls) == full - 1


def test_gradient_checkpointing(calls, hook_path):
    import transformers as tf
    results = []
    for checkpointing in (False, True):
        model = adapterkit.init(archs.model("llama", cls=tf.LlamaForCausalLM))
        model.add_adapter("l", config=LoRAConfig(**ALL))
        model.train_adapter("l")
        with torch.no_grad():
            for p in model.adapterkit.parameters():
                p.add_(0.1)
        if checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable({"use_reentrant": False})
        batch = archs.inputs("llama")
        calls.clear()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        results.append(({n: p.grad for n, p in model.adapterkit.named_parameters()}, len(calls)))
    sites_run = WHOLE_SITES["llama"] * archs.L
    assert [c for _, c in results] == [sites_run, 2 * sites_run]  # recomputed in the backward
    for name, grad in results[0][0].items():
        torch.testing.assert_close(results[1][0][name], grad, atol=1e-6, rtol=0)
    calls.clear()
    with hook_path:
        model.zero_grad(set_to_none=True)
        model(**batch, labels=batch["input_ids"]).loss.backward()
        for name, p in model.adapterkit.named_parameters():
            torch.testing.assert_close(p.grad, results[1][0][name], atol=1e-6, rtol=0)
    assert not calls


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_deepcopy_keeps_the_fast_path_on_the_copy(arch, calls):
    model = build(arch)
    model.set_active_adapters("l")
    clone = copy.deepcopy(model)
    inputs = archs.inputs(arch)
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
        calls.clear()
        torch.testing.assert_close(clone(**inputs).last_hidden_state, expected, atol=0, rtol=0)
        assert len(calls) == WHOLE_SITES[arch] * archs.L
        module = (clone.encoder.layer[0].attention.self.query if arch == "bert" else clone.h[0].mlp.c_fc)
        assert module.forward.__self__.state is clone.adapter_state  # the copy's site, not the original's
        for p in clone.adapterkit.parameters():
            p.mul_(0.5)
        clone.delete_adapter("l")
        assert "forward" not in module.__dict__
        torch.testing.assert_close(model(**inputs).last_hidden_state, expected, atol=0, rtol=0)


def test_forward_hooks_on_the_projection_see_the_adapted_output(calls):
    """As with the prepended hook before: the projection's adapters run before any forward hook on it, even one
    registered before the adapter was added."""
    model = adapterkit.init(archs.model("bert"))
    query = model.encoder.layer[0].attention.self.query
    seen = []
    query.register_forward_hook(lambda m, args, out: seen.append(out))
    model.add_adapter("l", config=LoRAConfig(**ALL))
    model.train_adapter("l")
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(0.1)
    x = torch.randn(1, 2, archs.H)
    with torch.no_grad():
        y = query(x)
        lora = model.adapterkit["l"].layers["0"]["attn_q"]
        expected = torch.nn.functional.linear(x, query.weight, query.bias) + lora.scaling * (
            x @ lora.lora_A.t() @ lora.lora_B.t())
    assert calls and seen[0] is y
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=0)


def test_other_forward_wrappers_are_kept(calls):
    """A forward already wrapped (an instance attribute, as accelerate does) is called, never bypassed; one put
    over ours stays working after the adapter is deleted."""
    model = adapterkit.init(archs.model("bert"))
    query = model.encoder.layer[0].attention.self.query
    called = []

    def under(*args, **kwargs):
        called.append("under")
        return type(query).forward(query, *args, **kwargs)

    query.forward = under
    model.add_adapter("l", config="lora", set_active=True)
    inputs = archs.inputs("bert")
    with torch.no_grad():
        model(**inputs)
        assert called == ["under"] and len(calls) == archs.L * 2 - 1  # q and v in each layer, but this one
        model.delete_adapter("l")
        assert query.__dict__["forward"] is under
        del query.forward

        torch.manual_seed(1)
        model.add_adapter("l", config="lora", set_active=True)
        for p in model.adapterkit.parameters():
            p.add_(0.1)
        ours = query.forward

        def over(*args, **kwargs):
            called.append("over")
            return ours(*args, **kwargs)

        query.forward = over
        with_adapter = model(**inputs).last_hidden_state
        model.delete_adapter("l")  # cannot unlink under "over": ours stays as a pass-through
        assert query.__dict__["forward"] is over
        called.clear()
        plain = adapterkit.init(archs.model("bert"))
        torch.testing.assert_close(model(**inputs).last_hidden_state, plain(**inputs).last_hidden_state,
                                   atol=0, rtol=0)
        assert called == ["over"]
        assert not torch.equal(with_adapter, plain(**inputs).last_hidden_state)
        torch.manual_seed(1)
        model.add_adapter("l", config="lora", set_active=True)  # a new site wraps the chain: runs once
        for p in model.adapterkit.parameters():
            p.add_(0.1)
        torch.testing.assert_close(model(**inputs).last_hidden_state, with_adapter, atol=1e-6, rtol=0)


def test_parametrized_or_subclassed_projections_are_not_fused(calls, hook_path):
    """Only exact nn.Linear / Conv1D are fused (their forward is what the kernels reproduce); a parametrization
    added after the adapter (it changes the module's class) is noticed at call time."""
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    model = build("bert", train="l")
    inputs = archs.inputs("bert")
    parametrize.register_parametrization(model.encoder.layer[0].attention.self.query, "weight", Double())
    model.encoder.layer[0].attention.self.query.parametrizations.weight.original.requires_grad_(False)
    fused = step(model, inputs)
    assert len(calls) == WHOLE_SITES["bert"] * archs.L - 1
    with hook_path:
        assert_same(fused, step(model, inputs))


@pytest.mark.parametrize("device,x_grad,expected", [("cpu", False, True), ("cpu", True, True),
                                                    ("meta", False, False), ("meta", True, False)])
def test_training_off_the_cpu_takes_the_hook_path(device, x_grad, expected):
    """With a graph to record, the node runs on the CPU only (its Python backward costs a GPU step more host time than
    it saves). Meta tensors stand in for a GPU here (autocast knows no meta device, so inference is checked on the
    CPU only)."""
    model = build("bert", train="l").to(device)
    site = model.encoder.layer[0].attention.self.query
    lora = model.adapterkit["l"].layers["0"]["attn_q"]
    x = torch.zeros(2, 3, site.in_features, device=device, requires_grad=x_grad)
    assert (sites.fused_args(lora, site, x) is not None) is expected
    if device == "cpu":
        with torch.no_grad():
            assert sites.fused_args(lora, site, x) is not None
