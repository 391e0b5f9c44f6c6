"""MTL-LoRA ("mtl_lora") and the MultiTask block with `task_ids` in the forward.

Reference: tests/fixtures/adapters_mtl_lora (tools/make_mtl_fixtures.py, the `adapters` package 1.3.0): each
task's adapter as the package saved it (AdapterHub format) and its output for one batch of mixed task ids.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
import archs
from adapterkit import AdapterConfigError, AdapterError, AdapterSetup, MTLLoRAConfig, MultiTask, Stack

FIXTURES = Path(__file__).parent / "fixtures"
MTL = FIXTURES / "adapters_mtl_lora"
MANIFEST = json.loads((MTL / "manifest.json").read_text())
BASES = {
    "bert": (FIXTURES / "adapters_ref" / "bert", transformers.BertModel, {"add_pooling_layer": False}),
    "roberta": (FIXTURES / "adapters_ref" / "roberta", transformers.RobertaModel, {"add_pooling_layer": False}),
    "gpt2": (FIXTURES / "adapters_ref_archs" / "gpt2", transformers.GPT2Model, {}),
    "llama": (FIXTURES / "adapters_ref_archs" / "llama", transformers.LlamaModel, {}),
}
CASES = [(arch, case) for arch in MANIFEST["archs"] for case in MANIFEST["cases"][arch]]


def _base(arch: str):
    path, cls, kwargs = BASES[arch]
    config = transformers.AutoConfig.from_pretrained(path / "base")
    config._attn_implementation = "eager"
    model = cls(config, **kwargs)
    missing, unexpected = model.load_state_dict(load_file(path / "base" / "model.safetensors"), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    return adapterkit.init(model.eval()), load_file(path / "inputs.safetensors")


def _reference(arch: str, case: str):
    """Our model with the package's saved adapters loaded, shared and active as in the generator."""
    entry = MANIFEST["cases"][arch][case]
    model, inputs = _base(arch)
    for task in entry["tasks"]:
        model.load_adapter(MTL / arch / case / task)
    if entry["task_ids"] is None:
        model.set_active_adapters(entry["tasks"][0])
        kwargs = {}
    else:
        model.share_parameters(MultiTask(*entry["tasks"]))
        model.set_active_adapters(MultiTask(*entry["tasks"]))
        kwargs = {"task_ids": torch.tensor(entry["task_ids"])}
    expected = load_file(MTL / arch / case / "expected.safetensors")["last_hidden_state"]
    return model, inputs, kwargs, expected


def test_fixture_set_is_complete():
    assert sorted(MANIFEST["archs"]) == ["bert", "gpt2", "llama", "roberta"]
    assert all(set(MANIFEST["cases"][arch]) == {"multitask", "lone"} for arch in MANIFEST["archs"])
    assert "gpt2_c_attn" in MANIFEST["package_refuses"]  # why GPT-2's cases target the FFN
    assert sum(p.stat().st_size for p in MTL.rglob("*") if p.is_file()) < 400 * 1024


@pytest.mark.parametrize("arch,case", CASES)
def test_loading_the_packages_files_gives_its_outputs(arch, case):
    model, inputs, kwargs, expected = _reference(arch, case)
    with torch.no_grad():
        out = model(**inputs, **kwargs).last_hidden_state
        with AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert (out - base).abs().max() > 1e-3
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_each_row_runs_its_own_task(arch):
    model, inputs, kwargs, expected = _reference(arch, "multitask")
    tasks = MANIFEST["tasks"]
    with torch.no_grad():
        outs = []
        for row, task in enumerate(MANIFEST["task_ids"]):
            with AdapterSetup(tasks[task]):
                outs.append(model(**{k: v[row:row + 1] for k, v in inputs.items()}).last_hidden_state)
        other = model(**inputs, task_ids=torch.tensor([0, 0, 0])).last_hidden_state
    torch.testing.assert_close(torch.cat(outs), expected, atol=1e-5, rtol=0)
    assert (other - expected).abs().max() > 1e-3  # the task ids matter


def test_the_package_saves_the_shared_tensors_in_every_task_and_sharing_ties_them():
    model, _, _, _ = _reference("bert", "multitask")
    a, b = model.adapterkit["a"].layers["0"]["attn_q"], model.adapterkit["b"].layers["0"]["attn_q"]
    assert a.lora_A is b.lora_A and a.lora_B is b.lora_B  # one tensor, trained for all tasks
    assert a.weights is not b.weights and a.task_specific is not b.task_specific
    hub = load_file(MTL / "bert" / "multitask" / "b" / "adapter.safetensors")
    key = "encoder.layer.0.attention.self.query.loras.b.lora_A"
    torch.testing.assert_close(hub[key], a.lora_A.detach(), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_adapterhub_export_is_the_packages_file(arch, tmp_path):
    model, _, _, _ = _reference(arch, "multitask")
    model.save_adapter(tmp_path / "b", "b", format="adapterhub")
    ours = load_file(next((tmp_path / "b").glob("*.safetensors")))
    theirs = load_file(MTL / arch / "multitask" / "b" / "adapter.safetensors")
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        torch.testing.assert_close(ours[key], tensor, atol=0, rtol=0)
    saved = json.loads((tmp_path / "b" / "adapter_config.json").read_text())["config"]
    packaged = json.loads((MTL / arch / "multitask" / "b" / "adapter_config.json").read_text())["config"]
    assert {k: v for k, v in saved.items() if k in packaged} == {k: packaged[k] for k in saved if k in packaged}


def test_mixing_weights_do_not_overflow_where_the_package_gives_nan():
    assert MANIFEST["package_nan_at_weights_5"]  # measured by the generator
    model = archs.randomised("bert", {"x": MTLLoRAConfig(r=4, n_up_projection=2)})
    model.set_active_adapters("x")
    batch = archs.inputs("bert")
    with torch.no_grad():
        low = model(**batch).last_hidden_state
        for name, p in model.adapterkit.named_parameters():
            if name.endswith(".weights"):
                p.add_(5.0)  # softmax is shift-invariant: the same mix, the same output
        high = model(**batch).last_hidden_state
    assert torch.isfinite(high).all()
    torch.testing.assert_close(high, low, atol=1e-5, rtol=0)


# -- beyond the reference: our own model, randomised ----------------------------------------------------------------
def _tasks(arch: str = "bert", n: int = 3, cls=None, share: bool = True, scale: float = 0.3, **fields):
    config = MTLLoRAConfig(**{"r": 4, "n_up_projection": 2, **fields})
    model = archs.randomised(arch, {t: config for t in "abc"[:n]}, cls=cls, scale=scale)
    setup = MultiTask(*"abc"[:n])
    if share:
        model.share_parameters(setup)
    model.set_active_adapters(setup)
    return model, setup


def _per_row(model, batch: dict, task_ids: list, tasks="abc"):
    """Each row alone with its task's adapter active."""
    rows = []
    with torch.no_grad():
        for row, task in enumerate(task_ids):
            with AdapterSetup(tasks[task] if isinstance(task, int) else task):
                rows.append(model(**{k: v[row:row + 1] for k, v in batch.items()})[0])
    return torch.cat(rows)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama", "t5"])
def test_multitask_equals_each_row_alone_on_every_kind_of_model(arch):
    model, _ = _tasks(arch)  # GPT-2: q / v are slices of the fused c_attn (the package cannot run this)
    batch = archs.inputs(arch)
    with torch.no_grad():
        out = model(**batch, task_ids=torch.tensor([2, 0, 1]))[0]
        with AdapterSetup(None):
            plain = model(**batch)[0]
    assert (out - plain).abs().max() > 1e-3
    torch.testing.assert_close(out, _per_row(model, batch, [2, 0, 1]), atol=1e-5, rtol=0)


def test_task_ids_as_a_list_of_ints_or_of_child_names():
    model, _ = _tasks()
    batch = archs.inputs("bert")
    with torch.no_grad():
        expected = model(**batch, task_ids=torch.tensor([1, 1, 0])).last_hidden_state
        as_ints = model(**batch, task_ids=[1, 1, 0]).last_hidden_state
        as_names = model(**batch, task_ids=["b", "b", "a"]).last_hidden_state
    torch.testing.assert_close(as_ints, expected, atol=0, rtol=0)
    torch.testing.assert_close(as_names, expected, atol=0, rtol=0)


def test_nested_blocks_and_plain_lora_tasks():
    model = archs.randomised("bert", {"a": "mtl_lora[r=4]", "b": "mtl_lora[r=4]", "c": "mtl_lora[r=4]",
                                      "l": "lora[r=2]"}, scale=0.3)
    batch = archs.inputs("bert")
    ids = [1, 0, 1]
    cases = [  # (setup, what each task's rows run)
        (Stack(MultiTask("a", "b"), "c"), [Stack("a", "c"), Stack("b", "c")]),
        (MultiTask(Stack("a", "c"), adapterkit.Average("b", "c", weights=[0.3, 0.7])),
         [Stack("a", "c"), adapterkit.Average("b", "c", weights=[0.3, 0.7])]),
        (MultiTask("l", "a"), ["l", "a"]),  # plain LoRA runs MultiTask too, as in the package
    ]
    for setup, per_task in cases:
        model.set_active_adapters(setup)
        with torch.no_grad():
            out = model(**batch, task_ids=torch.tensor(ids)).last_hidden_state
        torch.testing.assert_close(out, _per_row(model, batch, [per_task[t] for t in ids]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("task_ids,message", [
    (None, "pass task_ids=... to the forward, one task per row"),
    (torch.tensor([0, 3, 1]), "task_ids contains 3, but MultiTask\\('a', 'b', 'c'\\) has 3 tasks: each id must be "
                              "in 0..2"),
    (torch.tensor([0, -1, 1]), "task_ids contains -1"),
    (torch.tensor([0, 1]), "task_ids has shape \\(2,\\) for a batch of 3 rows"),
    (torch.tensor([[0, 1, 2]]), "task_ids has shape \\(1, 3\\) for a batch of 3 rows"),
    (torch.tensor([0.0, 1.0, 2.0]), "task_ids must hold integers"),
    (["a", "z", "b"], "task_ids names 'z', which is not a child of MultiTask"),
    ("abc", "task_ids must be a tensor or a list"),
])
def test_task_ids_errors(task_ids, message):
    model, _ = _tasks()
    batch = archs.inputs("bert")
    kwargs = {} if task_ids is None else {"task_ids": task_ids}
    with pytest.raises(AdapterError, match=message):
        model(**batch, **kwargs)


def test_task_ids_are_ignored_without_a_multitask_as_by_the_package():
    model, _ = _tasks()
    model.set_active_adapters("b")
    batch = archs.inputs("bert")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, task_ids=[7]).last_hidden_state, model(**batch).last_hidden_state,
                                   atol=0, rtol=0)


def test_multitask_refuses_parallel_and_methods_that_do_not_run_it():
    model, _ = _tasks()
    model.add_adapter("bn", config="seq_bn")
    with pytest.raises(AdapterError, match="MultiTask is not supported for bottleneck adapter 'bn'"):
        model.set_active_adapters(MultiTask("a", "bn"))
    model.set_active_adapters(Stack(adapterkit.Parallel("a", "b"), MultiTask("a", "c")))
    with pytest.raises(AdapterError, match="cannot run with Parallel in the same setup"):
        model(**archs.inputs("bert"), task_ids=[0, 1, 0])
    with pytest.raises(AdapterError, match="cannot nest MultiTask"):
        model.set_active_adapters(adapterkit.BatchSplit(MultiTask("a", "b"), "c", batch_sizes=[2, 1]))


@pytest.mark.parametrize("fields,message", [
    ({"r": 0}, "MTLLoRAConfig.r=0 must be"), ({"r": -2}, "MTLLoRAConfig.r=-2 must be"),
    ({"n_up_projection": 0}, "MTLLoRAConfig.n_up_projection=0 must be"),
    ({"task_specific_matrix_type": "diagonal"}, "task_specific_matrix_type='diagonal' is not allowed; allowed "
                                                "values: 'singular_values', 'linear'"),
    ({"weights_sharpness": 0.0}, "weights_sharpness=0.0 must be"),
    ({"composition_mode": "scale"}, "composition_mode='scale' is not allowed"),
    ({"init_weights": "vera"}, "init_weights='vera' is not allowed"),
    ({"selfattn_lora": False}, "targets no projection"),
])
def test_bad_fields_are_refused(fields, message):
    with pytest.raises(AdapterConfigError, match=message):
        MTLLoRAConfig(**fields)


def test_config_names_and_defaults_are_the_packages():
    config = adapterkit.resolve_config("mtl_lora")
    assert isinstance(config, MTLLoRAConfig)
    assert (config.r, config.alpha, config.n_up_projection, config.task_specific_matrix_type,
            config.weights_sharpness, config.attn_matrices) == (8, 8, 1, "singular_values", 0.05, ["q", "v"])
    # a fresh adapter is the identity: the up-projections start at zero, Lambda at ones, the mix even
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("x", config="mtl_lora[n_up_projection=3]", set_active=True)
    module = model.adapterkit["x"].layers["0"]["attn_q"]
    assert module.lora_B.shape == (3, 32, 8) and not module.lora_B.any()
    torch.testing.assert_close(module.mixing(), torch.full((3,), 1 / 3))


# -- sharing --------------------------------------------------------------------------------------------------------
def test_unshare_gives_each_task_its_own_copy():
    model, setup = _tasks()
    a, b = (model.adapterkit[n].layers["1"]["attn_v"] for n in "ab")
    assert a.lora_B is b.lora_B
    model.unshare_parameters(setup)
    assert a.lora_B is not b.lora_B and torch.equal(a.lora_B, b.lora_B)
    with torch.no_grad():
        a.lora_B.add_(1.0)  # the package's unshare leaves them tied: this would move b too
    assert not torch.equal(a.lora_B, b.lora_B)


def test_share_errors():
    model = archs.randomised("bert", {"a": "mtl_lora[r=4]", "b": "mtl_lora[r=2]", "c": "mtl_lora[r=4]",
                                      "l": "lora", "m": "lora"})
    with pytest.raises(AdapterError, match="cannot share lora_A of 'b' and 'a' at layer 0 attn_q: shapes"):
        model.share_parameters(["a", "b"])
    with pytest.raises(AdapterError, match="only adapters of one method can share"):
        model.share_parameters("a,l")
    with pytest.raises(AdapterError, match="LoRA / \\(IA\\)\\^3 / VeRA adapters cannot share parameters .* "
                       "methods that "
                                           "can: MTL-LoRA"):
        model.share_parameters(["l", "m"])
    with pytest.raises(AdapterError, match="reference adapter 'z' is not among"):
        model.share_parameters(["a", "c"], reference_adapter_name="z")
    model.share_parameters(["a", "c"], name="shared")
    with pytest.raises(AdapterError, match="'a' shares parameters in group 'shared' already"):
        model.share_parameters(["a", "b"])
    with pytest.raises(AdapterError, match="no group of shared parameters is named 'a,b'"):
        model.unshare_parameters(["a", "b"])
    model.delete_adapter("a")  # the rest of the group stays tied
    model.unshare_parameters(["c"], name="shared")


# -- merge, save / load ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["singular_values", "linear"])  # the package cannot build "linear" at all
def test_merging_one_task_equals_it_unmerged_and_reset_is_exact(kind):
    model, setup = _tasks("gpt2", task_specific_matrix_type=kind)
    batch = archs.inputs("gpt2")
    before = {n: p.clone() for n, p in model.named_parameters() if "adapterkit" not in n}
    model.set_active_adapters("b")
    with torch.no_grad():
        unmerged = model(**batch).last_hidden_state
        model.merge_adapter("b")
        merged = model(**batch).last_hidden_state
        model.set_active_adapters(setup)
        with pytest.raises(AdapterError, match="'b' of MultiTask\\('a', 'b', 'c'\\) are merged into the weights"):
            model(**batch, task_ids=[0, 1, 2])
        model.reset_adapter("b")
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    for name, p in model.named_parameters():
        if name in before:
            assert torch.equal(p, before[name]), name


def test_a_gated_task_is_not_merged():
    model, _ = _tasks(use_gating=True)
    with pytest.raises(AdapterError, match="cannot merge 'a': its MTL-LoRA is gated"):
        model.merge_adapter("a")


@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub"])
def test_save_and_load_reproduce_exactly(fmt, tmp_path):
    model, setup = _tasks("llama", task_specific_matrix_type="linear" if fmt == "adapterkit" else "singular_values")
    batch = archs.inputs("llama")
    with torch.no_grad():
        expected = model(**batch, task_ids=[1, 2, 0]).last_hidden_state
    for task in "abc":
        model.save_adapter(tmp_path / task, task, format=fmt)
    fresh = adapterkit.init(archs.model("llama"))
    for task in "abc":
        fresh.load_adapter(tmp_path / task)
    fresh.share_parameters(setup)
    fresh.set_active_adapters(setup)
    with torch.no_grad():
        out = fresh(**batch, task_ids=[1, 2, 0]).last_hidden_state
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_fused_projections_have_no_adapterhub_form(tmp_path):
    model, _ = _tasks("gpt2")
    with pytest.raises(AdapterConfigError, match="the `adapters` package cannot run MTL-LoRA on fused projections"):
        model.save_adapter(tmp_path / "a", "a", format="adapterhub")
    assert not (tmp_path / "a").exists()


# -- training, compile, dtypes, generate -----------------------------------------------------------------------------
def test_train_adapter_with_a_multitask_setup():
    torch.manual_seed(0)
    config = MTLLoRAConfig(r=4, n_up_projection=2, init_weights="bert")
    model = adapterkit.init(archs.model("bert"))
    for name in ["a", "b", "c", "x", "y"]:
        model.add_adapter(name, config=config)
    model.share_parameters(MultiTask("a", "b", "c"))
    model.share_parameters(["x", "y"])  # another group, not trained
    model.train_adapter(MultiTask("a", "b", "c"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.split(".")[1] in "abc" for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = archs.inputs("bert")
    task_ids = torch.tensor([0, 1, 2])
    target = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(25):
        loss = (model(**batch, task_ids=task_ids).last_hidden_state - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any(".weights" in n for n in changed) and any(".task_specific" in n for n in changed)
    a, b = (model.adapterkit[n].layers["0"]["attn_q"] for n in "ab")
    assert a.lora_A is b.lora_A  # still one tensor after the optimiser's steps


def test_compiles_as_one_graph_with_task_ids():
    torch._dynamo.reset()
    model, _ = _tasks()
    model.train_adapter(MultiTask("a", "b", "c"))
    batch = archs.inputs("bert")
    task_ids = torch.tensor([2, 0, 1])
    eager = model(**batch, task_ids=task_ids).last_hidden_state
    eager.pow(2).mean().backward()
    expected = {n: p.grad.clone() for n, p in model.adapterkit.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # a graph break raises
    out = compiled(**batch, task_ids=task_ids).last_hidden_state
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    out.pow(2).mean().backward()
    grads = dict(model.adapterkit.named_parameters())
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name].grad, grad, atol=1e-6, rtol=1e-5)


def test_float32_tasks_on_a_bfloat16_model():
    model, _ = _tasks("llama", scale=0.5)
    reference = copy.deepcopy(model)
    model.to(torch.bfloat16)
    for task in "abc":
        model.adapter_to(task, dtype=torch.float32)
    assert model.adapterkit["a"].layers["0"]["attn_q"].lora_A.dtype == torch.float32
    batch = archs.inputs("llama")
    with torch.no_grad():
        out = model(**batch, task_ids=[2, 0, 1]).last_hidden_state
        expected = reference(**batch, task_ids=[2, 0, 1]).last_hidden_state
        with AdapterSetup(None):
            plain = model(**batch).last_hidden_state
    assert out.dtype == torch.bfloat16
    scale = expected.abs().max()
    assert ((out.float() - expected).abs().max() / scale) < 0.03
    assert ((plain.float() - expected).abs().max() / scale) > 0.1  # the adapters matter beyond bf16 noise


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_with_task_ids_runs_each_row_as_its_task(arch):
    lm = transformers.AutoModelForCausalLM._model_mapping[type(archs.config(arch))]
    model, _ = _tasks(arch, n=2, cls=lm, scale=0.5)
    ids = archs.inputs(arch)["input_ids"]
    task_ids = [1, 0, 1]
    common = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), task_ids=torch.tensor(task_ids), **common)
    scores = torch.stack(out.scores, dim=1)
    for row, task in enumerate(task_ids):
        with AdapterSetup("ab"[task]):
            alone = model.generate(ids[row:row + 1], attention_mask=torch.ones_like(ids[row:row + 1]), **common)
        assert torch.equal(alone.sequences[0], out.sequences[row])
        torch.testing.assert_close(torch.stack(alone.scores, dim=1)[0], scores[row], atol=1e-5, rtol=0)
    with AdapterSetup(None):
        plain = model.generate(ids, attention_mask=torch.ones_like(ids), **common)
    assert not torch.equal(plain.sequences, out.sequences)


def test_summary_rows_on_roberta_base_equal_the_packages():
    config = transformers.RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                        layer_norm_eps=1e-5)
    with torch.device("meta"):
        model = adapterkit.init(transformers.RobertaModel(config))
        model.add_adapter("mtl_lora", config="mtl_lora")
        model.add_adapter("mtl_lora_n3", config=MTLLoRAConfig(n_up_projection=3))
    rows = {r["name"]: [r["#param"], round(r["%param"], 3)] for r in model.adapter_summary(as_dict=True)}
    assert rows == MANIFEST["summary_roberta_base"]
    assert model.adapter_summary(as_dict=True)[0]["architecture"] == "mtl_lora"


def test_per_example_adapter_names_with_multitask_rows_and_dropout_in_training():
    model = archs.randomised("bert", {t: MTLLoRAConfig(r=4, n_up_projection=2, dropout=0.1) for t in "abc"})
    batch = archs.inputs("bert")
    with torch.no_grad():
        out = model(**batch, adapter_names=[MultiTask("a", "b"), "c", MultiTask("a", "b")],
                    task_ids=[1, 0, 0]).last_hidden_state
    torch.testing.assert_close(out, _per_row(model, batch, ["b", "c", "a"]), atol=1e-6, rtol=0)
    model.train_adapter(MultiTask("a", "b", "c"))  # dropout on: each task's rows run on their own (not batched)
    model(**batch, task_ids=[2, 1, 0]).last_hidden_state.pow(2).sum().backward()
    for task in "abc":
        assert model.adapterkit[task].layers["0"]["attn_q"].task_specific.grad.abs().sum() > 0
