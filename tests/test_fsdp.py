"""FSDP2 training with adapters on 2 CPU ranks (gloo): LoRA, seq_bn and prefix tuning on a tiny BERT and a tiny
Llama, via torchrun with `adapterkit.distributed.shard_model` (a plain loop) and via `accelerate launch` with its FSDP
plugin (fsdp_version 2) and the AdapterTrainer. Each launch trains all six in sequence (tests/scripts/fsdp_steps.py,
fsdp_trainer_steps.py). After 3 SGD steps the adapter + head weights are identical on both ranks and equal one
process over the same global batches; the adapter-only files written on rank 0 hold exactly the adapter and head
tensors and load in this (fresh, unsharded) process with the trained model's outputs."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
import archs  # noqa: E402
import fsdp_steps  # noqa: E402
from adapterkit import AutoAdapterModel, distributed  # noqa: E402
from adapterkit.errors import AdapterError  # noqa: E402

SCRIPTS = Path(__file__).parent / "scripts"
CASES = [(arch, method) for arch in fsdp_steps.ARCHS for method in fsdp_steps.METHODS]


def test_shard_model_needs_a_process_group():
    model = fsdp_steps.build("bert", "lora")
    with pytest.raises(AdapterError, match="process group"):
        distributed.shard_model(model)


def test_gathered_adapters_leaves_an_unsharded_model_alone():
    model = fsdp_steps.build("bert", "lora")
    before = dict(model.named_parameters())
    with distributed.gathered_adapters(model) as writer:
        assert writer
    assert dict(model.named_parameters()) == before
    ids = {id(p) for _, _, p in distributed.adapter_parameters(model)}
    expected = {id(p) for p in model.adapterkit.parameters()} | {id(p) for p in model.heads.parameters()}
    assert ids == expected


@functools.cache
def single_process(arch: str, method: str):
    """One process, no sharding, a plain loop: (final adapter + head weights, the trained model)."""
    return fsdp_steps.run(arch, method)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], script: str, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command + [str(SCRIPTS / script), str(out)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b) and a
    return max((a[k] - b[k]).abs().max().item() for k in a)


def trained_outputs(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=fsdp_steps.probe()).logits


def fresh_model(arch: str):
    """The same base weights as the trained model (same seed), no adapter or head."""
    torch.manual_seed(0)
    return AutoAdapterModel.from_config(archs.config(arch)).eval()


def check_ranks(out: Path, arch: str, method: str, single: dict, trained) -> tuple[float, float, float]:
    """Both ranks: every adapter/head parameter sharded (each rank holds part of it), the same gathered weights and
    outputs, equal to one process; returns (across ranks, weights vs 1 process, outputs vs 1 process)."""
    records = []
    for rank in (0, 1):
        path = out / f"rank{rank}" / f"{arch}_{method}.safetensors"
        tensors = load_file(path)
        with open(path, "rb") as f:  # safetensors header: 8-byte length, then JSON with __metadata__
            meta = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
        assert meta["sharded"] == meta["params"] and int(meta["local_numel"]) < int(meta["numel"]), meta
        if "load_diff" in meta:  # torchrun worker: whole weights loaded into a sharded model come back exact
            assert float(meta["load_diff"]) == 0, meta
        if "resume_diff" in meta:  # accelerate worker: a Trainer resumed from the adapter checkpoint
            assert float(meta["resume_diff"]) <= 1e-6, meta
            print(f"{arch} {method} rank {rank}: resumed Trainer vs trained {float(meta['resume_diff']):.1e}")
        records.append((tensors.pop("__logits__"), tensors))
    (logits0, rank0), (logits1, rank1) = records
    across = max(max_diff(rank0, rank1), (logits0 - logits1).abs().max().item())
    vs_single = max_diff(rank0, single)
    outputs = (logits0 - trained_outputs(trained)).abs().max().item()
    assert across == 0, f"{arch} {method}: ranks differ by {across}"
    assert vs_single <= 1e-6, f"{arch} {method}: 2 ranks vs 1 process {vs_single}"
    assert outputs <= 1e-6, f"{arch} {method}: sharded outputs vs 1 process {outputs}"
    initial = fsdp_steps.weights(fsdp_steps.build(arch, method))
    assert max_diff(initial, single) > 1e-3, "training changed nothing"
    return across, vs_single, outputs


def check_saved_adapter(directory: Path, arch: str, trained) -> float:
    """save_adapter output: exactly the adapter's and the head's tensors; loads with the trained outputs."""
    assert sorted(p.name for p in directory.iterdir()) == [
        "adapter.safetensors", "adapter_config.json", "head.safetensors", "head_config.json"]
    adapter, head = load_file(directory / "adapter.safetensors"), load_file(directory / "head.safetensors")
    assert set(adapter) == set(trained.adapterkit["task"].state_dict())
    assert set(head) == set(trained.heads["task"].state_dict())
    saved = sum(t.numel() for t in [*adapter.values(), *head.values()])
    assert saved == sum(p.numel() for _, _, p in distributed.adapter_parameters(trained))
    assert saved < sum(p.numel() for p in trained.parameters()) // 4  # no base weight
    model = fresh_model(arch)
    model.load_adapter(str(directory), set_active=True)
    diff = (trained_outputs(model) - trained_outputs(trained)).abs().max().item()
    assert diff <= 1e-6, f"{directory.name}: reloaded outputs differ by {diff}"
    return diff


@pytest.mark.slow
@pytest.mark.ci
def test_torchrun_fully_shard(tmp_path):
    launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port())], "fsdp_steps.py", tmp_path)
    for arch, method in CASES:
        single, trained = single_process(arch, method)
        across, vs_single, outputs = check_ranks(tmp_path, arch, method, single, trained)
        reload = check_saved_adapter(tmp_path / "saved" / f"{arch}_{method}", arch, trained)
        print(f"torchrun {arch} {method}: ranks {across:.1e}, weights vs 1 process {vs_single:.1e}, outputs "
              f"{outputs:.1e}, reload {reload:.1e}")


ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
main_process_ip: 127.0.0.1
main_process_port: {port}
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: false
  fsdp_offload_params: false
"""


@pytest.mark.slow
@pytest.mark.ci
def test_accelerate_fsdp2_trainer(tmp_path):
    from adapterkit.training import load_trainable

    config = tmp_path / "fsdp.yaml"
    config.write_text(ACCELERATE_CONFIG.format(port=free_port()))
    out = tmp_path / "out"
    launch([str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(config)],
           "fsdp_trainer_steps.py", out)
    for arch, method in CASES:
        single, trained = single_process(arch, method)  # the Trainer runs the same steps as the plain loop
        across, vs_single, outputs = check_ranks(out, arch, method, single, trained)
        reload = check_saved_adapter(out / "saved" / f"{arch}_{method}", arch, trained)
        # the Trainer's own checkpoint: adapters and heads (no model weights), optimizer and scheduler
        checkpoint = out / f"{arch}_{method}" / "run" / "checkpoint-3"
        names = sorted(p.name for p in checkpoint.iterdir())
        assert names == ["adapterkit_checkpoint.json", "adapterkit_checkpoint.safetensors", "optimizer.bin",
                         "rng_state_0.pth", "rng_state_1.pth", "scheduler.pt", "trainer_state.json",
                         "training_args.bin"], names
        weights = load_file(checkpoint / "adapterkit_checkpoint.safetensors")
        assert max_diff(weights, single) <= 1e-6
        model = fsdp_steps.build(arch, method)  # untrained adapter and head, loaded from the checkpoint
        load_trainable(model, checkpoint)
        resumed = (trained_outputs(model) - trained_outputs(trained)).abs().max().item()
        assert resumed <= 1e-6
        print(f"accelerate {arch} {method}: ranks {across:.1e}, weights vs 1 process {vs_single:.1e}, outputs "
              f"{outputs:.1e}, reload {reload:.1e}, trainer checkpoint {resumed:.1e}")
