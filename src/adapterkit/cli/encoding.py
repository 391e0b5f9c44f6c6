"""Tokenised examples and their collators for each kind of data: pairs of texts, words with a tag each (labels on
first sub-words), and (question, choice) sequences shaped (batch, choices, length) for the multiple-choice head."""

from __future__ import annotations

import torch

from .data import Dataset


class Encoded(torch.utils.data.Dataset):
    """Tokenised examples for the transformers Trainer (padding happens in the collator, see collator_for)."""

    def __init__(self, data: Dataset, tokenizer, max_length: int):
        self.kind = data.kind
        if data.kind == "multiple_choice":
            width = len(data.text_pairs[0])
            firsts = [q for q in data.texts for _ in range(width)]
            seconds = [c for choices in data.text_pairs for c in choices]
            flat = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
            self.encodings = {k: [v[i:i + width] for i in range(0, len(v), width)] for k, v in flat.items()}
            self.labels = data.labels
        elif data.kind == "tagging":
            self.encodings = tokenizer(data.texts, is_split_into_words=True, truncation=True, max_length=max_length)
            self.labels = [_first_subword_labels(self.encodings.word_ids(i), tags) for i, tags in
                           enumerate(data.labels)]
        else:
            self.encodings = tokenizer(data.texts, data.text_pairs, truncation=True, max_length=max_length)
            self.labels = data.labels
        self.regression = data.is_regression

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = float(self.labels[i]) if self.regression else self.labels[i]
        return item


def _first_subword_labels(word_ids, tags: list[int]) -> list[int]:
    """A word's tag on its first sub-word; -100 (ignored) on special tokens and further sub-words."""
    out, previous = [], None
    for w in word_ids:
        out.append(-100 if w is None or w == previous else tags[w])
        previous = w
    return out


def collator_for(kind: str, tokenizer):
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding
    if kind == "tagging":
        return DataCollatorForTokenClassification(tokenizer)
    if kind == "multiple_choice":
        return ChoicesCollator(tokenizer)
    return DataCollatorWithPadding(tokenizer)


class ChoicesCollator:
    """Pads (example, choice) sequences together and shapes them (batch, choices, length) for the head."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features):
        labels = torch.tensor([f["labels"] for f in features])
        width = len(features[0]["input_ids"])
        flat = [{k: f[k][j] for k in f if k != "labels"} for f in features for j in range(width)]
        batch = self.tokenizer.pad(flat, return_tensors="pt")
        batch = {k: v.view(len(features), width, -1) for k, v in batch.items()}
        batch["labels"] = labels
        return batch
