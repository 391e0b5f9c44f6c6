"""A few AdapterTrainer steps on a tiny model, the same global batches whatever the process count.

Run by tests/test_distributed.py as one process, under `torchrun --nproc_per_node=2` or `accelerate launch`;
each rank writes its adapter + head weights to OUT_DIR/rank<r>_of_<world>.safetensors. Plain SGD, so a wrongly
scaled loss (or gradient average) changes the result (Adam would hide a constant factor).

usage: train_steps.py OUT_DIR
"""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, TrainingArguments

from adapterkit import AdapterTrainer, AutoAdapterModel
from adapterkit.training import trainable_state_dict

STEPS, GLOBAL_BATCH = 3, 4


def build():
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=99, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = AutoAdapterModel.from_config(config)
    model.add_adapter("task", config="lora[r=4,alpha=8]")
    model.add_classification_head("task", num_labels=2)
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.normal_(0, 0.1)
    model.train_adapter("task")
    return model


def run(out: Path, world: int = 1, accumulation: int = 1) -> dict:
    """Train and return the final adapter + head weights; asserts that training changed them."""
    model = build()
    initial = {k: v.clone() for k, v in trainable_state_dict(model).items()}
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(5, 99, (GLOBAL_BATCH * STEPS, 6), generator=g)
    data = [{"input_ids": row, "labels": int(row[0] % 2)} for row in rows]
    args = TrainingArguments(str(out / "run"), max_steps=STEPS, per_device_train_batch_size=GLOBAL_BATCH // world
                             // accumulation, gradient_accumulation_steps=accumulation, optim="sgd",
                             learning_rate=0.5, lr_scheduler_type="constant", save_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, seed=0, ddp_backend="gloo" if world > 1 else None)
    AdapterTrainer(model=model, args=args, train_dataset=data).train()
    final = {k: v.contiguous() for k, v in trainable_state_dict(model).items()}
    assert max((final[k] - initial[k]).abs().max() for k in final) > 1e-3, "training changed nothing"
    return final


def main() -> None:
    out = Path(sys.argv[1])
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    save_file(run(out, world), str(out / f"rank{rank}_of_{world}.safetensors"))
    if torch.distributed.is_initialized():
        # tear the process group down before the interpreter does: gloo's threads still alive during exit's
        # static destruction can abort the process (SIGABRT) after all the work is done
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
