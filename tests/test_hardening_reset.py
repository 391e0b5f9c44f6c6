"""merge_adapter / reset_adapter restore the exact base weights (torch.equal), whatever happened while merged.

Recomputing the base from the merged weight (`W - s B A`, `W / l`) is not exact: rounding (one bf16 step per
cycle), a zero (IA)^3 entry (0 / 0 = NaN), an adapter whose tensors changed while merged. The generic merge keeps
a copy of the rows it writes and reset writes them back. BERT (whole projections), GPT-2 (Conv1D, q/k/v as
slices of the fused `c_attn`) and DeBERTa (q/k/v as per-head rows of `in_proj`).
"""

from __future__ import annotations

import copy

import pytest
import torch

import archs
from adapterkit import AdapterError
from adapterkit.methods.lora.modules import LoRA

ARCHS = ["bert", "gpt2", "deberta"]  # whole projections; Conv1D slices of c_attn; DeBERTa's per-head in_proj rows
WIDE_LORA = "lora[attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]"
WIDE_IA3 = "ia3[attn_matrices=['q','k','v'],output_lora=True]"


def base_weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}


def assert_base(model, weights) -> None:
    now = model.state_dict()
    assert set(now) - set(weights) == {k for k in now if k.startswith("adapterkit.")}  # no extra state-dict keys
    differ = [k for k, v in weights.items() if not torch.equal(now[k], v)]
    assert not differ, f"not restored bit for bit: {differ}"


def forward(model, arch):
    with torch.no_grad():
        out = model(**archs.inputs(arch))
    return out.last_hidden_state


def modules(model, name):
    return [m for group in model.adapterkit[name].layers.values() for m in group.values()]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config", ["ia3", "ia3[intermediate_lora=False,output_lora=True,scale_inputs=['output']]"])
def test_ia3_with_a_zero_entry_resets_bit_exact(arch, config):
    model = archs.randomised(arch, {"a": config})
    with torch.no_grad():
        for m in modules(model, "a"):
            m.ia3_l[0] = 0.0
    model.set_active_adapters("a")
    unmerged = forward(model, arch)
    weights = base_weights(model)
    model.merge_adapter("a")
    model.reset_adapter("a")
    assert_base(model, weights)
    assert torch.equal(forward(model, arch), unmerged)


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_changed_while_merged_resets_bit_exact(arch):
    model = archs.randomised(arch, {"a": WIDE_LORA})
    weights = base_weights(model)
    model.merge_adapter("a")
    with torch.no_grad():
        for m in modules(model, "a"):
            m.lora_B.add_(0.49)
    model.reset_adapter("a")
    assert_base(model, weights)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config", [WIDE_LORA, WIDE_IA3])
def test_bf16_five_merge_reset_cycles_bit_exact(arch, config):
    model = archs.randomised(arch, {"a": config}).to(torch.bfloat16)
    weights = base_weights(model)
    for _ in range(5):
        model.merge_adapter("a")
        assert any(not torch.equal(v, weights[k]) for k, v in base_weights(model).items())
        model.reset_adapter("a")
        assert_base(model, weights)


THREE = {"q": "lora[attn_matrices=['q']]", "v": "ia3[attn_matrices=['v']]", "k": "lora[attn_matrices=['k']]"}


@pytest.mark.parametrize("arch", ARCHS)
def test_several_adapters_merged_in_sequence_reset_in_any_order(arch):
    """q, k and v of GPT-2 are slices of one Conv1D: each reset restores its own rows and leaves the others."""
    model = archs.randomised(arch, THREE)
    weights = base_weights(model)
    for name in ("q", "v", "k"):
        model.merge_adapter(name)
    model.reset_adapter("v")
    only_qk = archs.randomised(arch, THREE)  # the same adapters; only q and k merged
    only_qk.merge_adapter("k")
    only_qk.merge_adapter("q")
    assert_base(model, base_weights(only_qk))
    model.reset_adapter("k")
    model.reset_adapter("q")
    assert_base(model, weights)
    assert not model.adapter_state.merged


def test_fused_slice_snapshot_holds_only_its_rows():
    model = archs.randomised("gpt2", {"q": "lora[attn_matrices=['q']]"})
    model.merge_adapter("q")
    nbytes = model.adapter_state.merged["q"].nbytes
    hidden, layers = archs.H, archs.L
    assert nbytes == layers * (hidden * hidden + hidden) * 4  # q's rows of W and b per layer, float32
    model.reset_adapter("q")
    assert "q" not in model.adapter_state.merged
    half = archs.randomised("gpt2", {"q": "lora[attn_matrices=['q']]"}).to(torch.bfloat16)
    half.merge_adapter("q")
    assert half.adapter_state.merged["q"].nbytes == nbytes // 2  # kept in the base dtype


def test_overlapping_merge_is_refused_and_changes_nothing():
    model = archs.randomised("gpt2", {"a": "lora[attn_matrices=['q']]", "b": "lora[attn_matrices=['k','q']]"})
    model.merge_adapter("a")
    merged = base_weights(model)
    with pytest.raises(AdapterError, match="'a' is already merged into .*c_attn.*reset_adapter\\('a'\\)"):
        model.merge_adapter("b")
    assert_base(model, merged)
    assert list(model.adapter_state.merged) == ["a"]


def test_a_merge_that_fails_halfway_leaves_the_model_as_before(monkeypatch):
    model = archs.randomised("bert", {"a": WIDE_LORA})
    model.set_active_adapters("a")
    unmerged = forward(model, "bert")
    weights = base_weights(model)
    calls = []
    original = LoRA.merge_into

    def failing(self, projection):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        original(self, projection)

    monkeypatch.setattr(LoRA, "merge_into", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        model.merge_adapter("a")
    assert_base(model, weights)
    assert "a" not in model.adapter_state.merged
    assert torch.equal(forward(model, "bert"), unmerged)


def test_a_merge_writing_outside_its_projections_is_an_error(monkeypatch):
    """Exact reset relies on merges writing through `Projection.set`; a method that writes a weight directly is
    caught (its tensors named), so the gap cannot go unnoticed."""
    model = archs.randomised("bert", {"a": "lora"})

    def sneaky(self, projection):
        projection.module.weight.mul_(2.0)

    monkeypatch.setattr(LoRA, "merge_into", sneaky)
    with pytest.raises(AdapterError, match="changed encoder.layer.0.attention.self.query.weight.* outside Projection.set"):
        model.merge_adapter("a")
    assert "a" not in model.adapter_state.merged


@pytest.mark.parametrize("arch", ARCHS)
def test_merging_again_remerges_the_current_tensors(arch):
    model = archs.randomised(arch, {"a": WIDE_LORA})
    weights = base_weights(model)
    model.merge_adapter("a")
    with torch.no_grad():
        for m in modules(model, "a"):
            m.lora_B.mul_(-3.0)
    model.merge_adapter("a")  # from the base weights, with the new tensors (not a silent no-op, not twice)
    fresh = archs.randomised(arch, {"a": WIDE_LORA})
    fresh.adapterkit["a"].load_state_dict(model.adapterkit["a"].state_dict())
    fresh.merge_adapter("a")
    assert_base(model, base_weights(fresh))
    model.reset_adapter("a")
    assert_base(model, weights)


@pytest.mark.parametrize("arch", ARCHS)
def test_deleting_or_overwriting_a_merged_adapter_restores_the_base(arch, tmp_path):
    model = archs.randomised(arch, {"a": WIDE_IA3})
    weights = base_weights(model)
    base = forward(model, arch)
    model.save_adapter(tmp_path / "a", "a")
    model.merge_adapter("a")
    model.delete_adapter("a")
    assert_base(model, weights)
    assert not model.adapter_state.merged and not model.adapter_state.sites
    assert torch.equal(forward(model, arch), base)
    model.add_adapter("a", config=WIDE_IA3)
    model.load_adapter(tmp_path / "a", overwrite_ok=True)
    model.merge_adapter("a")
    model.add_adapter("a", config="lora", overwrite_ok=True)
    assert_base(model, weights)
    model.merge_adapter("a")
    model.load_adapter(tmp_path / "a", overwrite_ok=True)
    assert_base(model, weights)
    assert not model.adapter_state.merged


@pytest.mark.parametrize("arch", ARCHS)
def test_a_copy_of_a_merged_model_resets_itself_only(arch):
    model = archs.randomised(arch, {"a": WIDE_LORA})
    weights = base_weights(model)
    model.merge_adapter("a")
    merged = base_weights(model)
    clone = copy.deepcopy(model)
    clone.reset_adapter("a")
    assert_base(clone, weights)
    assert_base(model, merged)
    model.reset_adapter("a")
    assert_base(model, weights)
