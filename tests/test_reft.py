"""ReFT (loreft / noreft / direft): equal to the `adapters` package (fixtures from tools/make_reft_fixtures.py),
its AdapterHub files load, ours reload exactly, and it edits the layer output on every architecture."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
from adapterkit import AdapterConfigError, AdapterError, AdapterSetup, BatchSplit, Parallel, Stack
from adapterkit.configs import AdapterConfig
from adapterkit.methods.reft import DiReftConfig, LoReftConfig, NoReftConfig, ReftConfig

import archs

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_reft"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
ROOT = Path(__file__).parent.parent
CLASSES = {"bert": "BertModel", "roberta": "RobertaModel", "gpt2": "GPT2Model", "llama": "LlamaModel"}
CONFIGS = {"LoReftConfig": LoReftConfig, "NoReftConfig": NoReftConfig, "DiReftConfig": DiReftConfig}
FIXTURE_CASES = [(arch, case) for arch, entry in MANIFEST["archs"].items() for case in entry["cases"]]
HUB_CASES = [(a, c) for a, c in FIXTURE_CASES if (FIXTURES / a / c / "hub").is_dir()]


def _case(name: str) -> dict:
    return next(c for c in MANIFEST["cases"] if c["name"] == name)


def _base(arch: str):
    path = ROOT / MANIFEST["archs"][arch]["base"] / "base"
    model = getattr(transformers, CLASSES[arch]).from_pretrained(path, attn_implementation="eager").eval()
    return adapterkit.init(model)


def _inputs(arch: str) -> dict:
    return load_file(str(ROOT / MANIFEST["archs"][arch]["base"] / "inputs.safetensors"))


def _out(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch)[0]


def _randomise(model, name: str, seed: int = 0, scale: float = 0.3) -> None:
    """Noise on every ReFT parameter, except the diagonal of orthogonal `original`s: torch's orthogonal map reads
    its signs through .int(), so noise there would zero directions (the fixtures keep it too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.adapterkit[name].named_parameters():
            keep = p.diagonal().clone() if key.endswith("parametrizations.weight.original") else None
            p.add_(torch.randn(p.shape, generator=g).to(p) * scale)
            if keep is not None:
                p.diagonal().copy_(keep)


# -- the `adapters` package ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,case", FIXTURE_CASES)
def test_equals_the_package(arch, case):
    """Same config, the package's tensors (frozen orthogonal bases included) -> its outputs within 1e-5 (DiReFT
    too: compared before saving, since its files are incomplete)."""
    spec = _case(case)
    model = _base(arch)
    model.add_adapter(case, config=CONFIGS[spec["config_class"]](**spec["config_kwargs"]), set_active=True)
    state = load_file(str(FIXTURES / arch / case / "state.safetensors"))
    ours = {}
    for key, tensor in state.items():
        layer, rest = key.split(".reft_layer.refts." + case + ".")
        ours[f"layers.{int(layer.rsplit('.', 1)[1])}.reft.{rest}"] = tensor
    missing, unexpected = model.adapterkit[case].load_state_dict(ours, strict=True), None
    assert not missing.missing_keys and unexpected is None
    expected = load_file(str(FIXTURES / arch / case / "expected.safetensors"))["last_hidden_state"]
    torch.testing.assert_close(_out(model, _inputs(arch)), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,case", HUB_CASES)
def test_loads_the_packages_adapterhub_files(arch, case):
    model = _base(arch)
    name = model.load_adapter(FIXTURES / arch / case / "hub", set_active=True)
    expected = load_file(str(FIXTURES / arch / case / "expected.safetensors"))["last_hidden_state"]
    torch.testing.assert_close(_out(model, _inputs(arch)), expected, atol=1e-5, rtol=0)
    assert model.adapter_state.configs[name].orthogonality == (_case(case)["config_class"] == "LoReftConfig")


def test_the_packages_direft_files_are_incomplete_ours_are_not(tmp_path):
    """The package reloads its own DiReFT with projection subtraction (a bare class attribute it does not save):
    the manifest records the difference; ours saves `subtract_projection` and reloads exactly."""
    assert all(MANIFEST["archs"][a]["cases"]["direft"]["package_reload_max_abs_diff"] > 0.1 for a in CLASSES)
    model = _base("bert")
    model.add_adapter("d", config="direft[suffix_positions=1]", set_active=True)
    _randomise(model, "d")
    before = _out(model, _inputs("bert"))
    model.save_adapter(tmp_path / "d", "d")
    assert json.loads((tmp_path / "d" / "adapter_config.json").read_text())["config"]["subtract_projection"] is False
    again = _base("bert")
    again.load_adapter(tmp_path / "d", set_active=True)
    assert torch.equal(_out(again, _inputs("bert")), before)


# -- every architecture --------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["loreft[suffix_positions=2]", "noreft[tied_weights=True,suffix_positions=1]",
                                    "direft"])
@pytest.mark.parametrize("arch", list(archs.ARCHS))
def test_edits_the_layer_output_on_every_architecture(arch, config):
    """The intervention sits on the interface's layer output: it changes the model's output, and only at the
    selected positions of each layer it edits (checked on the first layer's output)."""
    model = adapterkit.init(archs.model(arch))
    batch = archs.inputs(arch)
    plain = _out(model, batch)
    seen = []
    layer = model.adapter_state.layers[0]

    def keep(module, args, output):
        seen.append((output if torch.is_tensor(output) else output[0]).clone())
    handle = layer.register_forward_hook(keep)
    _out(model, batch)
    handle.remove()
    model.add_adapter("a", config=config, set_active=True)
    _randomise(model, "a")
    handle = layer.register_forward_hook(keep)  # after ours: it sees the edited output
    out = _out(model, batch)
    handle.remove()
    assert (out - plain).abs().max() > 1e-3
    # the first layer's output (its input is the embeddings): changed exactly at the selected positions
    cfg = model.adapter_state.configs["a"]
    first, edited = seen[0], seen[1]
    changed = (edited - first).abs().amax(-1) > 0
    if "attention_mask" in batch and first.shape[1] == batch["attention_mask"].shape[1]:
        mask = batch["attention_mask"]
        lengths = mask.sum(-1)
        for row in range(mask.shape[0]):
            selected = set(range(cfg.prefix_positions))
            selected |= set(range(int(lengths[row]) - cfg.suffix_positions, int(lengths[row])))
            assert {i for i in range(mask.shape[1]) if changed[row, i]} == selected, (row, changed[row])
    else:
        assert changed.any()


@pytest.mark.parametrize("arch", list(archs.ARCHS))
def test_no_positions_change_nothing(arch):
    model = adapterkit.init(archs.model(arch))
    batch = archs.inputs(arch)
    plain = _out(model, batch)
    model.add_adapter("a", config="loreft[prefix_positions=0]", set_active=True)
    _randomise(model, "a")
    assert torch.equal(_out(model, batch), plain)


def test_overlap_the_suffix_wins_and_rows_shorter_than_the_positions_are_refused():
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("a", config="loreft[prefix_positions=3,suffix_positions=3]", set_active=True)
    batch = archs.inputs("bert")  # row 1 has 4 real tokens: positions 1, 2 are prefix and suffix
    _out(model, batch)
    model.add_adapter("b", config="loreft[prefix_positions=5]", set_active=True)
    with pytest.raises(AdapterError, match="positions beyond the input"):
        _out(model, batch)
    with pytest.raises(AdapterError, match="positions beyond the input"):
        _out(model, {"input_ids": batch["input_ids"][:, :2]})


# -- the API ---------------------------------------------------------------------------------------------------
def test_configs_match_the_package_and_bad_fields_are_refused():
    assert (LoReftConfig().orthogonality, NoReftConfig().orthogonality, DiReftConfig().orthogonality) == (
        True, False, False)
    assert (LoReftConfig().subtract_projection, DiReftConfig().subtract_projection) == (True, False)
    default = LoReftConfig()
    assert (default.layers, default.prefix_positions, default.suffix_positions, default.r, default.tied_weights,
            default.dropout, default.non_linearity, default.dtype, default.init_weights_seed) == (
        "all", 3, 0, 1, False, 0.05, None, None, None)
    assert AdapterConfig.from_dict(DiReftConfig(r=2).to_dict()) == DiReftConfig(r=2)
    assert isinstance(AdapterConfig.from_dict(LoReftConfig().to_dict()), ReftConfig)
    for bad, field in [(dict(r=0), "r"), (dict(r=-1), "r"), (dict(prefix_positions=-1), "prefix_positions"),
                       (dict(suffix_positions=-2), "suffix_positions"), (dict(non_linearity="nope"), "non_linearity"),
                       (dict(layers="some"), "layers"), (dict(layers=[-1]), "layers"), (dict(layers=[]), "layers"), (dict(dropout=1.0), "dropout"),
                       (dict(dtype="int8"), "dtype"), (dict(orthogonality=1), "orthogonality")]:
        with pytest.raises(AdapterConfigError, match=field):
            LoReftConfig(**bad)
    model = adapterkit.init(archs.model("bert"))
    with pytest.raises(AdapterError, match="exceeds the hidden size"):
        model.add_adapter("a", config=LoReftConfig(r=archs.H + 1))
    with pytest.raises(AdapterError, match="do not exist"):
        model.add_adapter("b", config=LoReftConfig(layers=[0, 5]))


def test_merge_is_refused_save_load_is_exact_and_summary_counts(tmp_path):
    model = adapterkit.init(archs.model("gpt2"))
    model.add_adapter("a", config="loreft[suffix_positions=1,r=2]", set_active=True)
    with pytest.raises(AdapterError, match="cannot be merged"):
        model.merge_adapter("a")
    _randomise(model, "a")
    batch = archs.inputs("gpt2")
    before = _out(model, batch)
    for fmt in ("adapterkit", "adapterhub"):
        model.save_adapter(tmp_path / fmt, "a", format=fmt)
        again = adapterkit.init(archs.model("gpt2"))
        again.load_adapter(tmp_path / fmt, set_active=True)
        assert torch.equal(_out(again, batch), before), fmt
    row = model.adapter_summary(as_dict=True)[0]
    assert row["#param"] == sum(p.numel() for p in model.adapterkit["a"].parameters()) == archs.L * 2 * (
        2 * archs.H + 2 + 2 * archs.H)


def test_train_adapter_trains_only_reft():
    torch.manual_seed(0)
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("a", config="loreft[suffix_positions=1,dropout=0.0]")
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"adapterkit.a.{n}" for n, _ in model.adapterkit["a"].named_parameters()}
    bases = {n: b.clone() for n, b in model.adapterkit["a"].named_buffers()}
    batch = archs.inputs("bert")
    target = torch.randn(_out(model, batch).shape, generator=torch.Generator().manual_seed(3))
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        loss = ((model(**batch)[0] - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    for unit in model.adapterkit["a"].layers["0"]["reft"].units:  # R stays orthonormal while it trains
        weight = unit.projection.weight
        torch.testing.assert_close(weight @ weight.T, torch.eye(weight.shape[0]), atol=1e-5, rtol=0)
    assert all(torch.equal(b, bases[n]) for n, b in model.adapterkit["a"].named_buffers())


def _greedy(model, ids, mask, steps):
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_with_the_kv_cache(arch):
    """Prefix positions: generate() with the cache equals the uncached greedy loop (left-padded batch). Suffix
    positions are the prompt's: a suffix-only adapter on a prompt of exactly that length equals, in generate(),
    the uncached loop of the prefix-only adapter with the same unit (both edit the prompt's tokens only)."""
    torch.manual_seed(0)
    model = adapterkit.init(transformers.AutoModelForCausalLM.from_config(archs.config(arch)).eval())
    model.generation_config.eos_token_id = None
    model.add_adapter("p", config="loreft[prefix_positions=2]", set_active=True)
    _randomise(model, "p", scale=1.0)
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 11, 12, 13]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = _greedy(model, ids, mask, 6)
    assert torch.equal(plain, expected)
    with AdapterSetup(None):
        assert not torch.equal(_greedy(model, ids, mask, 6), expected)  # the adapter matters
    model.add_adapter("s", config="loreft[prefix_positions=0,suffix_positions=3,tied_weights=True]")
    model.add_adapter("q", config="loreft[prefix_positions=3,tied_weights=True]")
    _randomise(model, "s", scale=1.0)
    model.adapterkit["q"].load_state_dict(model.adapterkit["s"].state_dict())
    prompt, ones = ids[:1, :3], mask[:1, :3]
    model.set_active_adapters("s")
    cached = model.generate(input_ids=prompt, attention_mask=ones, max_new_tokens=6, do_sample=False,
                            pad_token_id=0)
    model.set_active_adapters("q")
    assert torch.equal(cached, _greedy(model, prompt, ones, 6))


def test_composition_blocks():
    model = adapterkit.init(archs.model("bert"))
    batch = archs.inputs("bert")
    model.add_adapter("a", config="loreft[suffix_positions=1]")
    model.add_adapter("b", config="noreft")
    model.add_adapter("l", config="lora")
    _randomise(model, "a")
    _randomise(model, "b", seed=1)
    _randomise(model, "l", seed=2)
    outs = {}
    for name in ("a", "b"):
        model.set_active_adapters(name)
        outs[name] = _out(model, batch)
    model.set_active_adapters(BatchSplit("a", "b", batch_sizes=[1, 2]))
    split = _out(model, batch)
    torch.testing.assert_close(split[:1], outs["a"][:1], atol=1e-6, rtol=0)
    torch.testing.assert_close(split[1:], outs["b"][1:], atol=1e-6, rtol=0)
    model.set_active_adapters(Parallel("a", "b"))
    par = _out(model, batch)
    torch.testing.assert_close(par[:3], outs["a"], atol=1e-6, rtol=0)
    torch.testing.assert_close(par[3:], outs["b"], atol=1e-6, rtol=0)
    with torch.no_grad():
        routed = model(**batch, adapter_names=["b", "a", None])[0]
    model.set_active_adapters(None)
    torch.testing.assert_close(routed[0], outs["b"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(routed[1], outs["a"][1], atol=1e-6, rtol=0)
    torch.testing.assert_close(routed[2], _out(model, batch)[2], atol=1e-6, rtol=0)
    # Stack: each intervention on the previous one's output, in order
    model.set_active_adapters(Stack("a", "b"))
    stacked = _out(model, batch)
    assert not torch.equal(stacked, outs["a"]) and not torch.equal(stacked, outs["b"])
    model.set_active_adapters(Stack("l", "a"))  # with another method
    assert not torch.equal(_out(model, batch), outs["a"])
    from adapterkit import Average, Fuse
    for block in (Average("a", "b"), Fuse("a", "b")):
        with pytest.raises(AdapterError, match="not supported for ReFT"):
            model.set_active_adapters(block)


def test_float32_reft_on_a_bfloat16_model():
    model = adapterkit.init(archs.model("llama"))
    model.add_adapter("a", config="loreft[suffix_positions=1,dtype='float32']", set_active=True)
    _randomise(model, "a")
    reference = copy.deepcopy(model)
    model.to(torch.bfloat16)
    model.adapter_to("a", dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in model.adapterkit.parameters())
    batch = archs.inputs("llama")
    out, expected = _out(model, batch), _out(reference, batch)
    assert out.dtype == torch.bfloat16
    with AdapterSetup(None):
        plain = _out(model, batch)
    error = ((out.float() - expected).abs().max() / expected.abs().max()).item()
    assert error < 0.03 and ((plain.float() - expected).abs().max() / expected.abs().max()).item() > 3 * error
    half = adapterkit.init(archs.model("bert")).to(torch.bfloat16)  # orthogonal R stays float32 in bf16 units
    half.add_adapter("h", config="loreft", set_active=True)
    assert _out(half, archs.inputs("bert")).dtype == torch.bfloat16


def test_compiles_as_one_graph():
    model = adapterkit.init(archs.model("gpt2"))
    model.add_adapter("a", config="loreft[suffix_positions=2]", set_active=True)
    _randomise(model, "a")
    batch = archs.inputs("gpt2")
    eager = _out(model, batch)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**batch)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**batch)[0], eager, atol=1e-5, rtol=0)


def test_adapterhub_config_keeps_reft_dtype_and_seed():
    from adapterkit.io import config_from_adapterhub
    data = json.loads((FIXTURES / "bert" / "loreft" / "hub" / "adapter_config.json").read_text())["config"]
    config = config_from_adapterhub(dict(data, dtype="float32", init_weights_seed=3))
    assert (config.dtype, config.init_weights_seed, config.subtract_projection) == ("float32", 3, True)
    with pytest.raises(AdapterConfigError, match="output_reft"):
        config_from_adapterhub(dict(data, output_reft=False))


def test_seq2seq_generate_with_the_cache_equals_the_uncached_loop():
    """T5: the encoder's and decoder's interventions under generate() (encoder run once, decoder one token a
    step) give each step the logits of a full forward without the cache."""
    from transformers import T5ForConditionalGeneration
    torch.manual_seed(0)
    model = adapterkit.init(archs.model("t5", cls=T5ForConditionalGeneration))
    model.add_adapter("r", config="loreft[prefix_positions=2,r=2]", set_active=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.adapterkit.r.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    model.eval()
    inputs = {k: v[:1] for k, v in archs.inputs("t5").items() if k != "decoder_input_ids"}
    res = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    dec = torch.tensor([[model.config.decoder_start_token_id]])
    with torch.no_grad():
        for step in range(6):
            logits = model(**inputs, decoder_input_ids=dec, use_cache=False).logits[:, -1]
            assert (logits - res.logits[step]).abs().max() < 1e-5
            dec = torch.cat([dec, res.sequences[:, step + 1:step + 2]], 1)
        with adapterkit.AdapterSetup(None):
            base = model(**inputs, decoder_input_ids=dec, use_cache=False).logits
        assert (model(**inputs, decoder_input_ids=dec, use_cache=False).logits - base).abs().max() > 1e-2
