"""A few SGD steps of LoRA, seq_bn and prefix tuning on a tiny BERT and a tiny Llama, sharded with FSDP2.

Run by tests/test_fsdp.py under `torchrun --nproc_per_node=2` (gloo, CPU): the model is sharded with
`adapterkit.distributed.shard_model` (every transformer layer, then the root), each rank trains on its half of the
same global batches; then each rank writes its outputs and the gathered adapter + head weights (`rank_record`) to
OUT/rank<r>/<arch>_<method>.safetensors and rank 0 saves the adapter with its head (adapterkit format) to OUT/saved/<arch>_<method>. Imported by
the tests for the one-process run over the same global batches (`run`, world 1, no sharding), which the
AdapterTrainer runs (fsdp_trainer_steps.py, sequential sampling) must match too. SGD with momentum, so a
wrongly scaled gradient changes the result (Adam would hide a constant factor).

usage: fsdp_steps.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parents[1]))
import archs  # noqa: E402
from adapterkit import AutoAdapterModel  # noqa: E402
from adapterkit import distributed  # noqa: E402

STEPS, GLOBAL_BATCH, SEQ, LR, MOMENTUM, MAX_GRAD_NORM = 3, 4, 6, 0.5, 0.9, 1.0
ARCHS = ["bert", "llama"]
METHODS = {"lora": "lora[r=4,alpha=8,attn_matrices=['q','k','v'],output_lora=True]",
           "seq_bn": "seq_bn[reduction_factor=4]",
           "prefix": "prefix_tuning[prefix_length=3,bottleneck_size=16]"}


def build(arch: str, method: str):
    """The same model on every rank: seeded base, adapter and head, adapter weights moved off their init."""
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(archs.config(arch))
    model.add_adapter("task", config=METHODS[method])
    model.add_classification_head("task", num_labels=2)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.train_adapter("task")
    return model


def data():
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(5, archs.VOCAB, (GLOBAL_BATCH * STEPS, SEQ), generator=g)
    return rows, rows[:, 0] % 2


def probe():
    """Inputs for comparing outputs after loading."""
    return torch.randint(5, archs.VOCAB, (3, SEQ), generator=torch.Generator().manual_seed(2))


def train(model, world: int = 1, rank: int = 0) -> None:
    """STEPS SGD steps with the Trainer's gradient clipping; this rank takes its share of each global batch, in
    order (FSDP averages the gradients)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)  # a state to checkpoint
    rows, labels = data()
    per = GLOBAL_BATCH // world
    model.train()
    for step in range(STEPS):
        start = step * GLOBAL_BATCH + rank * per
        loss = model(input_ids=rows[start:start + per], labels=labels[start:start + per]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)  # as the Trainer does; one norm over all shards
        optimizer.step()
        optimizer.zero_grad()


def weights(model) -> dict[str, torch.Tensor]:
    """The adapter + head weights by model key (whole tensors: call inside `gathered_adapters` when sharded)."""
    ids = {id(p) for _, _, p in distributed.adapter_parameters(model)}
    return {k: v.detach().clone().contiguous() for k, v in model.named_parameters() if id(v) in ids}


def rank_record(model) -> tuple[dict, dict]:
    """What a rank writes after training: its outputs on `probe()` (a forward of the sharded model: every rank
    computes the whole batch), the gathered adapter + head weights, and (metadata) how many of those parameters
    FSDP shards and how many of their elements this rank holds."""
    from torch.distributed.tensor import DTensor

    params = [p for _, _, p in distributed.adapter_parameters(model)]
    sharded = [p for p in params if isinstance(p, DTensor)]
    meta = {"params": str(len(params)), "sharded": str(len(sharded)),
            "local_numel": str(sum(p.to_local().numel() for p in sharded)),
            "numel": str(sum(p.numel() for p in params))}
    model.eval()
    with torch.no_grad():
        tensors = {"__logits__": model(input_ids=probe()).logits.contiguous()}
    with distributed.gathered_adapters(model, rank0_only=False):
        tensors.update(weights(model))
    return tensors, meta


def load_into_sharded(arch: str, method: str, trained: dict) -> float:
    """Whole weights into a freshly sharded model (`load_full_weights`: each rank keeps its shard, as the
    AdapterTrainer's resume does); returns the largest difference of the weights gathered back."""
    model = distributed.shard_model(build(arch, method))
    for key, param in model.named_parameters():
        if key in trained:
            distributed.load_full_weights(param, trained[key])
    with distributed.gathered_adapters(model, rank0_only=False):
        back = weights(model)
    assert set(back) == set(trained)
    return max((back[k] - trained[k]).abs().max().item() for k in back)


def run(arch: str, method: str) -> tuple[dict, object]:
    """One process, no sharding: (final weights, the trained model)."""
    model = build(arch, method)
    train(model)
    return weights(model), model


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    (out / f"rank{rank}").mkdir(parents=True, exist_ok=True)
    for arch in ARCHS:
        for method in METHODS:
            model = distributed.shard_model(build(arch, method))
            train(model, world, rank)
            tensors, meta = rank_record(model)
            meta["load_diff"] = str(load_into_sharded(arch, method, {k: v for k, v in tensors.items()
                                                                     if k != "__logits__"}))
            save_file(tensors, str(out / f"rank{rank}" / f"{arch}_{method}.safetensors"), metadata=meta)
            distributed.save_adapter(model, out / "saved" / f"{arch}_{method}", "task")
    # tear the process group down before the interpreter does (gloo threads alive at exit can abort it)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
