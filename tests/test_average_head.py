"""`average_head` equals the `adapters` package's (fixtures from tools/make_average_head_fixtures.py: source heads
saved by the package on the tiny flexible-head BERT, averaged there, the averaged head's outputs and weights
recorded), and refuses what it cannot average, before the model changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterkit import AdapterError

from test_head_checkpoints import FIXTURES as HEADS, fixture_model

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_average_head"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
INPUTS = load_file(HEADS / "bert" / "inputs.safetensors")


def with_sources(case: str):
    model = fixture_model("bert")
    for name in MANIFEST["cases"][case]["sources"]:
        model.load_head(FIXTURES / case / name, load_as=name, set_active=False)
    return model


def _outputs(model, head: str) -> dict:
    with torch.no_grad():
        out = model(**INPUTS, head=head)
    return {k: out[k] for k in ("logits", "start_logits", "end_logits") if k in out and out[k] is not None}


def _check(model, case: str, name: str = "avg") -> None:
    expected = load_file(FIXTURES / case / "expected.safetensors")
    got = _outputs(model, name)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=0)
    weights = load_file(FIXTURES / case / "weights.safetensors")
    state = model.heads[name].state_dict()
    assert set(state) == set(weights) | set(MANIFEST["cases"][case]["tied"])
    for key, value in weights.items():
        torch.testing.assert_close(state[key], value, atol=1e-5, rtol=0)


def test_fixture_set_covers_head_types_and_weightings():
    cases = MANIFEST["cases"].values()
    assert {c["method"] for c in cases} == {"add_classification_head", "add_tagging_head", "add_qa_head",
                                            "add_masked_lm_head"}
    assert any(c["average"].get("normalize_weights") is False for c in cases)
    assert any("weights" not in c["average"] for c in cases) and any(c["tied"] for c in cases)


@pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
def test_matches_adapters_package(case):
    model = with_sources(case)
    average = json.loads((FIXTURES / case / "average.json").read_text())
    model.average_head("avg", **average)
    assert model.active_head != "avg"  # set_active=False by default, as the package
    first = average["head_list"][0]
    assert max((_outputs(model, "avg")[k] - v).abs().max() for k, v in _outputs(model, first).items()) > 1e-3
    _check(model, case)
    if MANIFEST["cases"][case]["tied"]:  # the decoder stays the input embeddings, not a weighted copy of them
        embedding = model.get_input_embeddings().weight
        assert all(dict(model.heads["avg"].named_parameters(remove_duplicate=False))[k] is embedding
                   for k in MANIFEST["cases"][case]["tied"])


def test_dict_head_list_gives_the_weights_and_set_active():
    """The package indexes a dict head_list like a list (and fails); here it is names -> weights."""
    model = with_sources("cls_weighted")
    model.average_head("avg", {"c0": 0.7, "c1": 0.3}, set_active=True)
    assert model.active_head == "avg"
    _check(model, "cls_weighted")


def test_overwrite_ok_replaces_an_existing_head():
    model = with_sources("qa_three")
    model.average_head("avg", ["q0", "q1"])
    model.average_head("avg", ["q0", "q1", "q2"], weights=[1.0, 2.0, 3.0], overwrite_ok=True)
    _check(model, "qa_three")


def test_heads_differing_in_dropout_only_average():
    model = fixture_model("bert")
    model.add_classification_head("a", num_labels=2)
    model.add_classification_head("b", num_labels=2, dropout_prob=0.4)
    model.average_head("avg", ["a", "b"], weights=[1.0, 0.0])
    for key, value in model.heads["a"].state_dict().items():
        assert torch.equal(model.heads["avg"].state_dict()[key], value)


def test_refusals_leave_the_model_unchanged():
    model = with_sources("cls_weighted")
    model.add_tagging_head("tag", num_labels=3)
    model.add_classification_head("c2", num_labels=2)
    model.add_classification_head("c1_labels", num_labels=3, id2label={0: "x", 1: "y", 2: "z"})
    model.active_head = "c0"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    heads = list(model.heads)
    cases = [
        ((["c0", "tag"],), {}, "'tag' is a tagging head and 'c0' a classification head; only heads of one type"),
        ((["c0", "c2"],), {}, "'c2' has another config than 'c0' \\(they differ in label2id, num_labels\\)"),
        ((["c0", "c1_labels"],), {}, "they differ in label2id"),
        ((["c0", "missing"],), {}, "head 'missing' does not exist on this model; heads: 'c0', 'c1'"),
        ((["c0", "c1"],), {"weights": [1.0]}, "average_head: 1 weights for 2 heads \\['c0', 'c1'\\]"),
        ((["c0", "c1"],), {"weights": [1.0, 2.0, 3.0]}, "3 weights for 2 heads"),
        ((["c0", "c1"],), {"weights": [1.0, -1.0]}, "sum to 0.0 and cannot be normalised"),
        ((["c0", "c1"],), {"weights": [1.0, float("nan")]}, "must be 2 finite numbers"),
        (({"c0": 1.0},), {"weights": [1.0]}, "either in head_list"),
        (("c0",), {}, "head_list='c0' must be a list of head names"),
        (([],), {}, "at least one head"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(AdapterError, match=message):
            model.average_head("avg", *args, **kwargs)
    with pytest.raises(AdapterError, match="cannot be one of its sources"):
        model.average_head("c0", ["c0", "c1"], overwrite_ok=True)
    with pytest.raises(AdapterError, match="a head named 'c2' already exists"):
        model.average_head("c2", ["c0", "c1"])
    assert list(model.heads) == heads and model.active_head == "c0"
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
