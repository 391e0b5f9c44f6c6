"""peft's combination types in `average_adapter` (TIES, DARE, magnitude pruning, SVD forms): the same adapters,
saved by peft and loaded into both, merged by peft's `add_weighted_adapter` and by ours give the same factors and
outputs within 1e-5 on a tiny BERT, a tiny grouped-query Llama and GPT-2's Conv1D projections. DARE's masks are
random: both sides are seeded alike before the call (torch.manual_seed) and adapterkit draws them in peft's
order."""

from __future__ import annotations

import copy
import warnings

import peft
import pytest
import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

import adapterkit
from adapterkit import AdapterError

import archs

ATOL = 1e-5
TARGETS = {"bert": ["query", "key", "value", "intermediate.dense"],
           "gpt2": ["c_proj", "c_fc"],  # Conv1D, stored (in, out): peft's masks on the update follow that layout
           "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
NAMES = ["a0", "a1", "a2"]
WEIGHTS = [0.7, -0.4, 0.5]
# combination type -> its options (peft's keyword arguments, ours alike)
CASES = {
    "ties": dict(density=0.5),
    "ties-frequency": dict(density=0.3, majority_sign_method="frequency"),
    "dare_linear": dict(density=0.6),
    "dare_ties": dict(density=0.5),
    "dare_ties-frequency": dict(density=0.7, majority_sign_method="frequency"),
    "magnitude_prune": dict(density=0.4),
    "svd": dict(),
    "svd-rank2-clamp": dict(svd_rank=2, svd_clamp=0.9),
    "svd-reduced": dict(svd_rank=6, svd_full_matrices=False),
    "ties_svd": dict(density=0.5),
    "dare_linear_svd": dict(density=0.6, svd_rank=3),
    "dare_ties_svd": dict(density=0.5, majority_sign_method="frequency"),
    "magnitude_prune_svd": dict(density=0.4, svd_clamp=0.95),
}


def _saved_sources(arch, tmp_path, names=NAMES, **fields):
    """One peft LoRA per name on the tiny `arch`, randomised (seed = its index) and saved; their directories."""
    fields = {"r": 4, "lora_alpha": 6, "target_modules": TARGETS[arch], **fields}
    dirs = []
    for i, name in enumerate(names):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = peft.get_peft_model(archs.model(arch), peft.LoraConfig(**fields))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if "lora_" in key:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        model.save_pretrained(tmp_path / name)
        dirs.append(tmp_path / name)
    return dirs


def _both(arch, dirs, names=NAMES):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(archs.model(arch), dirs[0], adapter_name=names[0]).eval()
        for name, directory in zip(names[1:], dirs[1:]):
            theirs.load_adapter(directory, adapter_name=name)
    ours = adapterkit.init(archs.model(arch))
    for name, directory in zip(names, dirs):
        ours.load_adapter(directory, load_as=name)
    return theirs, ours


@pytest.fixture(scope="module", params=["bert", "llama", "gpt2"])
def sources(request, tmp_path_factory):
    arch = request.param
    return arch, _saved_sources(arch, tmp_path_factory.mktemp(arch))


def _merged(theirs, ours, combination, options, seed=11, names=NAMES, weights=WEIGHTS):
    theirs, ours = copy.deepcopy(theirs), copy.deepcopy(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns on density 1
        torch.manual_seed(seed)
        theirs.add_weighted_adapter(names, weights, "m", combination_type=combination, **options)
    theirs.set_adapter("m")
    torch.manual_seed(seed)
    ours.average_adapter("m", names, weights, combine_strategy=combination, normalize_weights=False,
                         set_active=True, **options)
    return theirs, ours


def _out(model, arch):
    with torch.no_grad():
        return model(**archs.inputs(arch)).last_hidden_state


def _factors(ours, tmp_path):
    ours.save_adapter(tmp_path / "export", "m", format="peft")
    return load_file(tmp_path / "export" / "adapter_model.safetensors")


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_peft_add_weighted_adapter(sources, case, tmp_path):
    arch, dirs = sources
    combination = case.split("-")[0]
    theirs, ours = _merged(*_both(arch, dirs), combination, CASES[case])
    expected = {k: v for k, v in get_peft_model_state_dict(theirs, adapter_name="m").items()}
    got = _factors(ours, tmp_path)
    assert got.keys() == expected.keys() and len(got) == 2 * 2 * {"gpt2": 3}.get(arch, len(TARGETS[arch]))
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=ATOL, rtol=0, msg=key)
    config = ours.adapters_config["m"]
    assert config.scaling == 1.0 and config.r == theirs.peft_config["m"].r
    with adapterkit.AdapterSetup(None):
        assert (_out(ours, arch) - _out(theirs, arch)).abs().max() > 1e-2  # the merged adapter does something
    assert (_out(ours, arch) - _out(theirs, arch)).abs().max() <= ATOL


@pytest.mark.parametrize("combination", ["dare_ties", "dare_linear_svd"])
def test_dare_masks_follow_the_seed(sources, combination):
    arch, dirs = sources
    theirs, ours = _both(arch, dirs)
    _, first = _merged(theirs, ours, combination, dict(density=0.5), seed=3)
    _, again = _merged(theirs, ours, combination, dict(density=0.5), seed=3)
    _, other = _merged(theirs, ours, combination, dict(density=0.5), seed=4)
    assert torch.equal(_out(first, arch), _out(again, arch))
    assert (_out(first, arch) - _out(other, arch)).abs().max() > 1e-3


def test_density_one_prunes_nothing_and_draws_nothing(sources):
    """At density 1 DARE keeps every entry unscaled (as peft: no mask is drawn, the generator is left as it was), so
    "dare_linear" is "magnitude_prune" at 1 and "dare_ties" is "ties" at 1."""
    arch, dirs = sources
    theirs, ours = _both(arch, dirs)
    for dare, plain in (("dare_linear", "magnitude_prune"), ("dare_ties", "ties")):
        _, a = _merged(theirs, ours, dare, dict(density=1.0))
        state = torch.random.get_rng_state()
        torch.manual_seed(11)
        _, b = _merged(theirs, ours, plain, dict(density=1.0))
        torch.random.set_rng_state(state)
        assert torch.equal(_out(a, arch), _out(b, arch))


def test_one_source_is_merged_with_the_strategy_asked_for(tmp_path):
    """peft falls back to its "linear" for one adapter (density ignored); here "ties" at density 0.25 keeps the
    int(0.25 numel) largest entries of each factor, weighed by sqrt(|w s|)."""
    dirs = _saved_sources("bert", tmp_path, names=["a0"])
    _, ours = _both("bert", dirs, names=["a0"])
    ours.average_adapter("m", ["a0"], [0.8], combine_strategy="ties", density=0.25, normalize_weights=False)
    state = ours.adapter_state
    for key, module in state.layer_modules("m"):
        source = state.module_at("a0", key)
        root = (0.8 * source.scaling) ** 0.5
        for merged, factor in ((module.lora_A, source.lora_A), (module.lora_B, source.lora_B)):
            kept = merged != 0
            assert kept.sum() == int(0.25 * factor.numel())
            torch.testing.assert_close(merged[kept], root * factor[kept], atol=1e-6, rtol=0)
            assert factor[kept].abs().min() >= factor[~kept].abs().max()


def test_svd_of_rslora_sources_is_the_weighted_sum_of_their_updates(tmp_path):
    """peft keeps `use_rslora` on the merged adapter (r = lora_alpha = svd_rank), so its update is sqrt(svd_rank)
    times the merge it decomposed; ours (scaling 1) is that merge: at svd_rank 8 >= the rank of a sum of two
    rank-4 updates the truncation is exact and the update is `sum_i w_i s_i B_i A_i`."""
    names, weights = ["a0", "a1"], [0.7, -0.4]
    dirs = _saved_sources("bert", tmp_path, names=names, use_rslora=True)
    theirs, ours = _merged(*_both("bert", dirs, names), "svd", dict(svd_rank=8), names=names, weights=weights)
    assert theirs.peft_config["m"].use_rslora and not ours.adapters_config["m"].use_rslora
    state = ours.adapter_state
    for key, module in state.layer_modules("m"):
        expected = sum(w * state.module_at(n, key).delta_weight() for n, w in zip(names, weights))
        torch.testing.assert_close(module.delta_weight(), expected, atol=1e-5, rtol=0)
    got, expected = _factors(ours, tmp_path), get_peft_model_state_dict(theirs, adapter_name="m")
    for key, value in expected.items():  # the same factors: peft's update differs by its scaling only
        torch.testing.assert_close(got[key], value, atol=ATOL, rtol=0)


def test_refusals_leave_the_model_unchanged(tmp_path):
    dirs = _saved_sources("bert", tmp_path, names=["a0", "a1"])
    other = _saved_sources("bert", tmp_path / "other", names=["t"], target_modules=["query"])
    rank = _saved_sources("bert", tmp_path / "rank", names=["r2"], r=2)
    _, model = _both("bert", dirs + other + rank, names=["a0", "a1", "t", "r2"])
    model.add_adapter("i", config="ia3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    configs = dict(model.adapters_config)
    pair = ["a0", "a1"]
    cases = [
        (pair, {"combine_strategy": "tie"}, "unknown combine_strategy 'tie'; allowed: linear, .*ties, .*dare_linear, "
                                             ".*magnitude_prune_svd"),
        (pair, {"combine_strategy": "ties"}, "combine_strategy 'ties' needs density \\(density goes with "
                                             "combine_strategy 'ties', 'dare_linear'"),
        (pair, {"combine_strategy": "dare_ties_svd"}, "'dare_ties_svd' needs density"),
        (pair, {"combine_strategy": "ties", "density": 0}, "density=0 must be a number in \\(0, 1\\]"),
        (pair, {"combine_strategy": "dare_linear", "density": 1.5}, "density=1.5 must be a number in \\(0, 1\\]"),
        (pair, {"combine_strategy": "magnitude_prune", "density": -0.2}, "density=-0.2 must be"),
        (pair, {"combine_strategy": "ties", "density": "half"}, "density='half' must be"),
        (pair, {"combine_strategy": "cat", "density": 0.5}, "density goes with .*; 'cat' takes no options"),
        (pair, {"density": 0.5}, "density goes with .*; 'linear' takes no options"),
        (pair, {"combine_strategy": "ties", "density": 0.5, "majority_sign_method": "mean"},
         "unknown majority_sign_method 'mean'; allowed: total, frequency"),
        (pair, {"combine_strategy": "dare_linear", "density": 0.5, "majority_sign_method": "frequency"},
         "majority_sign_method goes with combine_strategy 'ties', 'dare_ties', 'ties_svd', 'dare_ties_svd'; "
         "'dare_linear' takes density"),
        (pair, {"combine_strategy": "ties", "density": 0.5, "svd_rank": 2}, "svd_rank goes with"),
        (pair, {"combine_strategy": "svd", "svd_rank": 33}, "svd_rank=33 must be between 1 and 32"),
        (pair, {"combine_strategy": "svd", "svd_rank": 0}, "svd_rank=0 must be between 1 and 32"),
        (pair, {"combine_strategy": "svd", "svd_clamp": 1.5}, "svd_clamp=1.5 must be a quantile in \\[0, 1\\]"),
        (pair, {"combine_strategy": "svd", "svd_full_matrices": "yes"}, "svd_full_matrices='yes' must be True"),
        (pair, {"combine_strategy": "svd", "svd_driver": "magic"}, "unknown svd_driver 'magic'; allowed: None, "
                                                                   "'gesvd', 'gesvdj', 'gesvda'"),
        (pair, {"combine_strategy": "svd", "svd_driver": "gesvd"}, "needs adapters on a CUDA device"),
        (["a0", "t"], {"combine_strategy": "ties", "density": 0.5}, "'t' has another config than 'a0'"),
        (["a0", "r2"], {"combine_strategy": "svd"}, "'r2' has another config than 'a0'"),
        (["i"], {"combine_strategy": "dare_ties", "density": 0.5}, "'dare_ties' is for LoRA adapters"),
    ]
    for names, kwargs, message in cases:
        with pytest.raises(AdapterError, match=message):
            model.average_adapter("m", names, **kwargs)
    assert dict(model.adapters_config) == configs and "m" not in model.adapterkit
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
