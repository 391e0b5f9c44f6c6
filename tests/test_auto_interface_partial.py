"""The automatic interface where a layer is only partly the usual shape: it keeps what it confirms and refuses the
rest by name. Layer stacks that agree on some projections only (Hiera's stages change width, so only some confirm
the attention output projection); an FFN that runs at an inner width (MobileBERT's bottleneck layers); a gated FFN
by CPM-Ant's names; a hybrid layer with a Mamba mixer beside the attention (Falcon-H1)."""

from __future__ import annotations

import pytest

import model_sweep
from adapterkit.interfaces.infer import infer_interface


def _inferred(model_type: str):
    built = model_sweep.build(model_type, seconds=120)
    assert built.model is not None, built.why
    return built, infer_interface(built.model)


def test_stacks_keep_the_projections_they_all_confirm():
    built, interface = _inferred("hiera")
    assert sorted(interface.attention) == ["k", "q", "v"]  # (one FusedSlice of attn.qkv each, in every stage)
    assert "attn_o" in interface.unresolved and "differ in their o projection" in interface.unresolved["attn_o"]
    assert model_sweep.check(built, "lora") == ("ok", "")


def test_an_ffn_at_an_inner_width_gets_lora_and_ia3_but_no_bottleneck_adapter():
    built, interface = _inferred("mobilebert")
    assert interface.intermediate[0] == "intermediate.dense" and "ffn.0.intermediate.dense" in interface.intermediate
    assert interface.output[0] == "output.dense" and "ffn.0.output.dense" in interface.output
    assert "inner width" in interface.unresolved["output_adapter"]
    assert model_sweep.check(built, "ia3") == ("ok", "")
    status, reason = model_sweep.check(built, "seq_bn")
    assert status == "refused" and "inner width" in reason


def test_cpm_ant_gated_ffn_names():
    built, interface = _inferred("cpmant")
    assert set(interface.intermediate) == {"ffn.ffn.w_in.w_0", "ffn.ffn.w_in.w_1"}
    assert interface.output == ("ffn.ffn.w_out",)
    assert "output_adapter" in interface.residual_sites
    assert model_sweep.check(built, "ia3") == ("ok", "")


@pytest.mark.slow
@pytest.mark.ci  # (Falcon-H1's Mamba mixer runs its reference kernels on the CPU: ~40 s)
def test_a_hybrid_layer_takes_the_attention_with_q_k_v_and_the_sites_it_confirms():
    _, interface = _inferred("falcon_h1")
    assert interface.attention["q"] == "self_attn.q_proj" and interface.self_attention == "self_attn"
    assert interface.residual_sites["output_adapter"].output == "feed_forward"
    assert "no residual add" in interface.unresolved["mh_adapter"]  # (attention and mixer outputs are summed)
