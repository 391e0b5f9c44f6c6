"""AdapterDrop: `skip_layers` (set_active_adapters and per forward) leaves out the adapters of those layers, as the
`adapters` 1.3.0 package does (fixtures of tools/make_plus_fixtures.py), and AdapterDropCallback trains with the
package's schedule (its AdapterDrop notebook's callback: the lowest randint(0, n_layers - 1) layers per step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adapterkit
from adapterkit import AdapterDropCallback, AdapterError, AdapterTrainer, resolve_config

import archs
from plus_fixtures import ARCHS, case_model, expected, run
from test_training import args, dataset, make_model

FIXTURE_CASES = ["lora", "prefix_tuning", "seq_bn_rf4_sd03", "adapterplus"]
# configs whose per-layer modules do not depend on which layers exist, so `leave_out` is "those adapters absent"
ABSENT = ["seq_bn", "double_seq_bn", "par_bn", "lora[attn_matrices=['q','k','v'],intermediate_lora=True]", "ia3", "loha",
          "lokr", "adapterplus[reduction_factor=4]"]


@pytest.mark.parametrize("case", FIXTURE_CASES)
@pytest.mark.parametrize("arch", ARCHS)
def test_skip_layers_matches_package(arch, case):
    model = case_model(arch, case)
    ref = expected(arch, case)
    for layer in (0, 1):
        model.set_active_adapters(case, skip_layers=[layer])
        torch.testing.assert_close(run(model, arch), ref[f"skip_{layer}"], atol=1e-5, rtol=0)
    model.set_active_adapters(case)
    for layer in (0, 1):  # the same for one forward
        torch.testing.assert_close(run(model, arch, skip_layers=[layer]), ref[f"skip_{layer}"], atol=1e-5, rtol=0)
    torch.testing.assert_close(run(model, arch), ref["last_hidden_state"], atol=1e-5, rtol=0)
    assert (ref["skip_0"] - ref["last_hidden_state"]).abs().max() > 1e-3


def _absent_model(arch: str, config: str, weights: dict, leave_out: list[int]):
    model = adapterkit.init(archs.model(arch))
    model.add_adapter("a", config=resolve_config(config, leave_out=leave_out))
    kept = model.adapterkit.a.state_dict()
    model.adapterkit.a.load_state_dict({k: weights[k] for k in kept})
    model.set_active_adapters("a")
    return model


@pytest.mark.parametrize("arch, config", [(a, c) for a in ["bert", "gpt2", "llama", "bart"] for c in ABSENT
                                          if not (a == "bart" and c.startswith("adapterplus"))])  # test_adapterplus
def test_skipped_layers_equal_those_adapters_absent(arch, config):
    model = archs.randomised(arch, {"a": config})
    model.set_active_adapters("a")
    weights = model.adapterkit.a.state_dict()
    inputs = archs.inputs(arch)
    n = len(model.adapter_state.layers)
    with torch.no_grad():
        full = model(**inputs)[0]
        for skip in ([0], [n - 1]):
            absent = _absent_model(arch, config, weights, skip)
            out = model(**inputs, skip_layers=skip)[0]
            torch.testing.assert_close(out, absent(**inputs)[0], atol=1e-6, rtol=0)
            assert (out - full).abs().max() > 1e-5
        model.set_active_adapters(None)
        plain = model(**inputs)[0]
        model.set_active_adapters("a", skip_layers=list(range(n)))  # every layer skipped = no adapter
        torch.testing.assert_close(model(**inputs)[0], plain, atol=1e-6, rtol=0)
        assert (full - plain).abs().max() > 1e-4


def test_forward_skip_layers_is_for_that_forward_only():
    model = archs.randomised("bert", {"a": "seq_bn"})
    model.set_active_adapters("a", skip_layers=[0])
    inputs = archs.inputs("bert")
    with torch.no_grad():
        kept = model(**inputs).last_hidden_state
        none_skipped = model(**inputs, skip_layers=[]).last_hidden_state
        again = model(**inputs).last_hidden_state
        model.set_active_adapters("a")
        full = model(**inputs).last_hidden_state
    torch.testing.assert_close(none_skipped, full, atol=0, rtol=0)
    torch.testing.assert_close(again, kept, atol=0, rtol=0)
    assert (kept - full).abs().max() > 1e-4
    assert model.adapter_state.skip_layers is None and model.adapter_state.record.skip_layers is None


def test_skipped_adapters_get_no_gradient():
    model = archs.randomised("bert", {"a": "seq_bn"})
    model.train_adapter("a")
    model(**archs.inputs("bert"), skip_layers=[0]).last_hidden_state.sum().backward()
    grads = {k: p.grad for k, p in model.adapterkit.a.named_parameters()}
    assert all(g is None for k, g in grads.items() if k.startswith("layers.0."))
    assert all(g is not None and g.abs().sum() > 0 for k, g in grads.items() if k.startswith("layers.1."))


@pytest.mark.parametrize("skip, message", [
    ([2], r"skip_layers has \[2\]: layer indices must be ints in 0 \.\. 1"),
    ([-1], r"skip_layers has \[-1\]"),
    ([0, "1"], r"skip_layers has \['1'\]"),
    ([True], r"skip_layers has \[True\]"),
    ("0", r"skip_layers='0' must be a list of layer indices"),
    (3, r"skip_layers=3 must be a list of layer indices"),
])
def test_bad_skip_layers_are_refused(skip, message):
    model = archs.randomised("bert", {"a": "seq_bn"})
    with pytest.raises(AdapterError, match=message):
        model.set_active_adapters("a", skip_layers=skip)
    with pytest.raises(AdapterError, match=message):
        model(**archs.inputs("bert"), skip_layers=skip)
    assert model.adapter_state.skip_layers is None and model.adapter_state.record.skip_layers is None


def test_merged_adapters_cannot_be_skipped():
    model = archs.randomised("bert", {"a": "lora"})
    model.set_active_adapters("a")
    model.merge_adapter("a")
    with pytest.raises(AdapterError, match=r"skip_layers cannot leave out merged adapter\(s\) 'a'.*reset_adapter"):
        model(**archs.inputs("bert"), skip_layers=[0])
    model.reset_adapter("a")
    model(**archs.inputs("bert"), skip_layers=[0])


# -- AdapterDropCallback ------------------------------------------------------------------------------------
def test_schedule_is_the_notebooks():
    """n = randint(0, n_layers - 1) lowest layers (the notebook's randint(0, 11) on 12 layers), numpy's RNG."""
    callback = AdapterDropCallback(seed=3)
    reference = np.random.RandomState(3)
    draws = [callback.draw(12) for _ in range(200)]
    assert draws == [list(range(reference.randint(0, 11))) for _ in range(200)]
    assert {len(d) for d in draws} == set(range(11))  # 0 .. 10 layers, never all 12
    np.random.seed(5)
    unseeded = [AdapterDropCallback().draw(12) for _ in range(5)]
    np.random.seed(5)
    assert unseeded == [list(range(np.random.randint(0, 11))) for _ in range(5)]


@pytest.mark.parametrize("max_skip", [0, -1, 1.5, True])
def test_bad_max_skip_is_refused(max_skip):
    with pytest.raises(AdapterError, match="max_skip"):
        AdapterDropCallback(max_skip=max_skip)
    with pytest.raises(AdapterError, match="exceeds the model's 2 layers"):
        AdapterDropCallback(max_skip=3).draw(2)


class _Watch:
    """Records the skip_layers every forward of the model saw, training and evaluation apart."""

    def __init__(self, model):
        self.train_skips, self.eval_skips, self.evaluating = [], [], False
        model.register_forward_pre_hook(self._seen)
        self.model = model

    def _seen(self, module, args):
        skip = self.model.adapter_state.skip_layers
        (self.eval_skips if not module.training else self.train_skips).append(sorted(skip or ()))


def test_callback_trains_with_the_schedule_and_evaluates_without(tmp_path):
    model = make_model()
    watch = _Watch(model)
    drop = AdapterDropCallback(max_skip=2, seed=0)
    trainer = AdapterTrainer(model=model, args=args(tmp_path, max_steps=12, eval_strategy="steps", eval_steps=3,
                                                    per_device_eval_batch_size=8, save_steps=100),
                             train_dataset=dataset(), eval_dataset=dataset(8), callbacks=[drop])
    trainer.train()
    reference = np.random.RandomState(0)
    assert watch.train_skips == [list(range(reference.randint(0, 2))) for _ in range(12)]
    assert [0] in watch.train_skips and [] in watch.train_skips
    assert watch.eval_skips and all(s == [] for s in watch.eval_skips)  # the notebook evaluates with the last draw
    assert model.adapter_state.skip_layers is None
    assert model.active_adapters.flatten() == ["task"]
