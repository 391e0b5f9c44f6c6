"""Head checkpoints: AdapterHub head fixtures, task-model conversion, our format's round trip and its errors,
and AdapterModel save_pretrained / from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig

import adapterkit
from adapterkit import AdapterError, AutoAdapterModel
from adapterkit.heads import io as head_io

from conftest import tiny_config

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_heads"
CASES = [("bert", c) for c in ("cls", "cls_pooled", "regression", "multilabel", "tagging", "multiple_choice", "qa",
                               "masked_lm", "causal_lm", "static")] + \
        [("roberta", c) for c in ("cls", "masked_lm", "static")]


def fixture_model(arch: str):
    config = AutoConfig.from_pretrained(FIXTURES / arch / "base")
    config._attn_implementation = "eager"
    model = AutoAdapterModel.from_config(config)
    missing, unexpected = model.base_model.load_state_dict(load_file(FIXTURES / arch / "base" / "model.safetensors"),
                                                           strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    return model.eval()


def snapshot(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before: dict, heads: list, active):
    after = model.state_dict()
    assert list(model.heads) == heads and model.active_head == active
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("arch,case", CASES)
def test_adapterhub_heads_load_and_match(arch, case):
    model = fixture_model(arch)
    name = model.load_head(FIXTURES / arch / case)
    assert model.active_head == name == ("default" if case == "static" else case)
    inputs = load_file(FIXTURES / arch / "inputs.safetensors")
    if model.heads[name].config["head_type"] == "multiple_choice":
        inputs = {k: v.view(1, *v.shape) for k, v in inputs.items()}
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")
    with torch.no_grad():
        out = model(**inputs)
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, atol=1e-5, rtol=0)
    if case == "cls":
        labels = model.get_labels()
        assert labels == (["neg", "neu", "pos"] if arch == "bert" else ["LABEL_0", "LABEL_1", "LABEL_2"])


TASKS = [("bert", "BertForSequenceClassification"), ("bert", "BertForQuestionAnswering"),
         ("bert", "BertForMaskedLM"), ("roberta", "RobertaForSequenceClassification"),
         ("roberta", "RobertaForTokenClassification"), ("roberta", "RobertaForMultipleChoice")]


@pytest.mark.parametrize("arch,task", TASKS)
def test_task_model_checkpoint_loads_with_its_head_converted(tmp_path, batch, arch, task):
    torch.manual_seed(0)
    original = getattr(transformers, task)(tiny_config(arch, num_labels=3 if "Sequence" in task else 2)).eval()
    with torch.no_grad():  # move every weight off its init so a missed or misplaced tensor shows
        for p in original.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    original.save_pretrained(tmp_path)
    model = AutoAdapterModel.from_pretrained(tmp_path).eval()
    assert type(model).__name__.endswith("AdapterModel") and model.active_head == "default"
    if "MultipleChoice" in task:
        batch = {k: v.view(1, 3, -1) for k, v in batch.items()}
    with torch.no_grad():
        expected, out = original(**batch), model(**batch)
    keys = [k for k in ("logits", "start_logits", "end_logits") if k in expected]
    for key in keys:
        torch.testing.assert_close(out[key], expected[key], atol=1e-5, rtol=0)
    if "Sequence" in task:
        assert model.heads.default.config["num_labels"] == 3
    # saved again, it reloads as an AdapterModel with the same head
    model.save_pretrained(tmp_path / "again")
    again = AutoAdapterModel.from_pretrained(tmp_path / "again").eval()
    reloaded, before = again.state_dict(), model.state_dict()
    assert set(before) <= set(reloaded) and all(torch.equal(reloaded[k], before[k]) for k in before)
    with torch.no_grad():  # identical weights; two instances may still differ in the last float bit (seen: 3e-8)
        torch.testing.assert_close(again(**batch)[keys[0]], out[keys[0]], atol=1e-6, rtol=0)


def test_from_config_and_from_pretrained_round_trip(tmp_path, batch):
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config("roberta"))
    model.add_adapter("a", config="lora[r=4,alpha=8]")
    model.add_adapter("b", config="seq_bn")
    model.add_classification_head("a", num_labels=3)
    model.add_masked_lm_head("mlm")
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.normal_(0, 0.1)
    model.set_active_adapters("a")
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AutoAdapterModel.from_pretrained(tmp_path).eval()
    assert loaded.adapters_config == model.adapters_config
    assert loaded.active_adapters == model.active_adapters and loaded.active_head == "a"
    assert list(loaded.heads) == ["a", "mlm"]
    assert loaded.heads.mlm[3].weight is loaded.roberta.embeddings.word_embeddings.weight
    with torch.no_grad():
        for head in ("a", "mlm"):
            torch.testing.assert_close(loaded(**batch, head=head).logits, model(**batch, head=head).logits,
                                       atol=0, rtol=0)
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_unconvertible_task_checkpoint_loads_its_base_and_says_so(tmp_path, batch, caplog):
    from transformers import BertForPreTraining
    torch.manual_seed(0)
    original = BertForPreTraining(tiny_config("bert")).eval()
    original.save_pretrained(tmp_path)
    model = AutoAdapterModel.from_pretrained(tmp_path).eval()
    assert "BertForPreTraining checkpoint; adapterkit has no conversion for its head" in caplog.text
    assert len(model.heads) == 0
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).last_hidden_state, original.bert(**batch).last_hidden_state)


def test_architectures_without_an_interface_are_named(batch):
    from transformers import OPTConfig
    with pytest.raises(AdapterError, match="no adapter interface for model_type 'opt'"):
        AutoAdapterModel.from_config(OPTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                               ffn_dim=64, vocab_size=99, word_embed_proj_dim=32))


def test_bare_base_checkpoint_loads(tmp_path, batch):
    from transformers import BertModel
    torch.manual_seed(0)
    base = BertModel(tiny_config("bert")).eval()
    base.save_pretrained(tmp_path)
    model = AutoAdapterModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).last_hidden_state, base(**batch).last_hidden_state)
    assert len(model.heads) == 0


# -- our format ---------------------------------------------------------------------------------------
@pytest.fixture
def trained():
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config("bert")).eval()
    model.add_classification_head("cls", num_labels=3, id2label={0: "x", 1: "y", 2: "z"})
    model.add_masked_lm_head("mlm")
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p) * 0.1) if p is not model.bert.embeddings.word_embeddings.weight else None
    return model


def fresh():
    torch.manual_seed(0)
    return AutoAdapterModel.from_config(tiny_config("bert")).eval()


@pytest.mark.parametrize("name", ["cls", "mlm"])
def test_head_round_trip_is_exact(tmp_path, trained, batch, name):
    trained.save_head(tmp_path, name)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["head.safetensors", "head_config.json"]
    saved = load_file(tmp_path / "head.safetensors")
    assert set(saved) == set(trained.heads[name].state_dict()) - {"3.weight"}  # a tied decoder is not saved
    other = fresh()
    assert other.load_head(tmp_path, load_as="loaded") == "loaded"
    for key, value in trained.heads[name].state_dict().items():
        assert torch.equal(other.heads.loaded.state_dict()[key], value)
    with torch.no_grad():
        assert torch.equal(other(**batch, head="loaded").logits, trained(**batch, head=name).logits)
    if name == "cls":
        assert other.get_labels("loaded") == ["x", "y", "z"]


def test_missing_head_file_names_it_and_leaves_the_model(tmp_path, trained):
    trained.save_head(tmp_path, "cls")
    (tmp_path / "head.safetensors").unlink()
    model = fresh()
    model.add_tagging_head("keep")
    before = snapshot(model)
    with pytest.raises(AdapterError, match=r"missing head weights; expected head\.safetensors"):
        model.load_head(tmp_path)
    (tmp_path / "head_config.json").unlink()
    with pytest.raises(AdapterError, match=r"head_config\.json.*missing head config"):
        model.load_head(tmp_path)
    assert_unchanged(model, before, ["keep"], "keep")


def test_corrupted_head_files_give_clear_errors(tmp_path, trained):
    trained.save_head(tmp_path, "cls")
    model = fresh()
    model.add_tagging_head("cls")
    before = snapshot(model)
    weights = tmp_path / "head.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(AdapterError, match=r"head\.safetensors: not a readable safetensors file"):
        model.load_head(tmp_path)
    weights.write_bytes(good)
    config = tmp_path / "head_config.json"
    config.write_text(config.read_text()[:40])
    with pytest.raises(AdapterError, match=r"head_config\.json: head config is not valid JSON"):
        model.load_head(tmp_path)
    assert_unchanged(model, before, ["cls"], "cls")


def test_wrong_shapes_or_keys_are_rejected(tmp_path, trained):
    trained.save_head(tmp_path, "cls")
    saved = json.loads((tmp_path / "head_config.json").read_text())
    model = fresh()
    before = snapshot(model)
    (tmp_path / "head_config.json").write_text(json.dumps({**saved, "hidden_size": 64}))
    with pytest.raises(AdapterError, match="saved for hidden_size 64, this model has 32"):
        model.load_head(tmp_path)
    (tmp_path / "head_config.json").write_text(json.dumps({**saved, "config": {**saved["config"], "num_labels": 4}}))
    with pytest.raises(AdapterError, match=r"do not fit head 'cls'.*4\.weight \(3, 32\) \(expected \(4, 32\)\)"):
        model.load_head(tmp_path)
    (tmp_path / "head_config.json").write_text(json.dumps({**saved, "config": {**saved["config"], "layers": 1}}))
    with pytest.raises(AdapterError, match=r"do not fit head 'cls' \(classification\): unexpected \['4\.bias', '4\.w"):
        model.load_head(tmp_path)
    (tmp_path / "head_config.json").write_text(json.dumps({**saved, "model_type": "gpt2"}))
    with pytest.raises(AdapterError, match="saved for model_type 'gpt2'"):
        model.load_head(tmp_path)
    assert_unchanged(model, before, [], None)


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_adapterhub_bin_is_never_unpickled_beyond_tensors(tmp_path, trained):
    (tmp_path / "head_config.json").write_text(json.dumps({
        "config": trained.heads.cls.config, "hidden_size": 32, "model_type": "bert", "name": "cls",
        "model_class": "BertAdapterModel", "version": "adapters.1.3.0"}))
    weights = {f"heads.cls.{k}": v for k, v in trained.heads.cls.state_dict().items()}
    torch.save({**weights, "evil": _Exploit()}, tmp_path / "pytorch_model_head.bin")
    model = fresh()
    with pytest.raises(AdapterError, match=r"pytorch_model_head\.bin: refused to load"):
        model.load_head(tmp_path)
    (tmp_path / "pytorch_model_head.bin").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(AdapterError, match=r"pytorch_model_head\.bin: not a readable weights file"):
        model.load_head(tmp_path)
    torch.save(weights, tmp_path / "pytorch_model_head.bin")
    assert model.load_head(tmp_path) == "cls"  # the clean file loads
    assert torch.equal(model.heads.cls[4].weight, trained.heads.cls[4].weight)


def test_failed_save_leaves_the_previous_head(tmp_path, trained, monkeypatch):
    trained.save_head(tmp_path, "cls")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        trained.heads.cls[4].weight.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(head_io, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        trained.save_head(tmp_path, "cls")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files left either
    model = fresh()
    model.load_head(tmp_path)


def test_models_without_flexible_heads_say_so(tmp_path, trained):
    from transformers import BertForSequenceClassification
    trained.save_head(tmp_path, "cls")
    model = adapterkit.init(BertForSequenceClassification(tiny_config("bert")))
    with pytest.raises(AdapterError, match="no flexible heads; load the model with adapterkit.AutoAdapterModel"):
        head_io.load_head(model, tmp_path)
    assert head_io.has_head(tmp_path) and not head_io.has_head(tmp_path / "nowhere")
