"""Language-modelling examples for `--task causal-lm` / `--task seq2seq`: the checked rows (lm_read.py)
tokenised into `input_ids` + `labels` where every token outside the completion is -100, optional packing, and the
padding collator.

`text`: loss on every token; `prompt` + `completion`: loss on the completion (and EOS); chat `messages` (the
tokenizer's chat template): loss on the assistant turns; seq2seq: the target is the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data import DataError
from .lm_read import check_rows, detect_format, line_of, read_jsonl

IGNORE = -100
@dataclass
class LMData:
    """Tokenised examples: each a dict of `input_ids` and `labels` (seq2seq: labels are the target ids)."""
    examples: list[dict]
    fmt: str
    path: str
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.examples)


def load_lm(path, tokenizer, max_length: int, seq2seq: bool, packing: bool = False,
            max_samples: int | None = None) -> LMData:
    path = Path(path)
    rows = read_jsonl(path)[:max_samples]
    fmt = detect_format(path, rows, seq2seq)
    check_rows(path, rows, fmt, seq2seq)
    if fmt == "messages" and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{path}: chat 'messages' need a tokenizer with a chat template; this tokenizer has none "
                        "(use 'prompt' + 'completion' fields instead)")
    if fmt == "messages" and not getattr(tokenizer, "is_fast", False):
        raise DataError(f"{path}: chat 'messages' need a fast tokenizer (character offsets tell the assistant tokens "
                        "apart); use 'prompt' + 'completion' fields instead")
    encode = _encode_seq2seq if seq2seq else {"text": _encode_text, "prompt": _encode_prompt,
                                              "messages": _encode_chat}[fmt]
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(encode(tokenizer, row, path))
        except _RowError as exc:  # the line is looked up only when there is an error (a scan of the file)
            raise DataError(f"{path}: line {line_of(path, i)}: {exc}") from None
    if packing:
        if seq2seq:
            raise DataError("--packing is for --task causal-lm (seq2seq examples are not concatenated)")
        examples = pack(examples, max_length)
    else:
        examples = [{k: v[:max_length] for k, v in e.items()} for e in examples]
    kept = [e for e in examples if any(t != IGNORE for t in e["labels"])]
    if not kept:
        raise DataError(f"{path}: no example keeps a completion token within --max-length {max_length}; "
                        "raise --max-length or shorten the prompts")
    return LMData(kept, fmt, str(path), len(examples) - len(kept))


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _encode_text(tokenizer, row, path) -> dict:
    ids = _ids(tokenizer, row["text"], True)
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids += _eos(tokenizer)
    return {"input_ids": ids, "labels": list(ids)}


def _encode_prompt(tokenizer, row, path) -> dict:
    """Prompt and completion are tokenised apart, so no token straddles the boundary the loss is split at."""
    prompt = _ids(tokenizer, row["prompt"], True)
    if prompt and prompt[-1] == tokenizer.eos_token_id:  # tokenizers that end every text with EOS
        prompt = prompt[:-1]
    completion = _ids(tokenizer, row["completion"], False) + _eos(tokenizer)
    return {"input_ids": prompt + completion, "labels": [IGNORE] * len(prompt) + completion}


class _RowError(Exception):
    """A row the tokenizer cannot encode; load_lm adds the file and line."""


def _render(tokenizer, messages, generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # noqa: BLE001  (jinja2's TemplateError & co.: the template rejects this conversation)
        raise _RowError(f"the tokenizer's chat template rejects these messages "
                        f"({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None


def _encode_chat(tokenizer, row, path) -> dict:
    """The chat template renders the conversation; an assistant turn's tokens are what its rendering adds after
    the conversation so far with the generation prompt (the turn's content and its end-of-turn marker)."""
    messages = [{k: v for k, v in t.items() if v is not None} for t in row["messages"]]  # no Arrow-filled Nones
    text = _render(tokenizer, messages)
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[:i + 1])
        if not (text.startswith(upto) and upto.startswith(before)):
            raise _RowError("the tokenizer's chat template does not render this conversation as the sum of its "
                            "turns, so the assistant tokens cannot be told apart; use 'prompt' + 'completion'")
        spans.append((len(before), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    # a token is the assistant's when its characters overlap a span (a word's leading-space marker may sit before it)
    labels = [t if any(s < b and e > a for a, b in spans) else IGNORE for t, (s, e) in zip(ids, enc["offset_mapping"])]
    return {"input_ids": ids, "labels": labels}


def _encode_seq2seq(tokenizer, row, path) -> dict:
    source, target = (row["source"], row["target"]) if "source" in row and row.get("source") is not None else (
        row["prompt"], row["completion"])
    labels = list(tokenizer(text_target=target)["input_ids"])
    if not labels or labels[-1] != tokenizer.eos_token_id:  # the model learns where the target ends
        labels += _eos(tokenizer)
    return {"input_ids": _ids(tokenizer, source, True), "labels": labels}


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """Concatenate every example (labels along) and cut the stream into blocks of max_length tokens."""
    ids = [t for e in examples for t in e["input_ids"]]
    labels = [t for e in examples for t in e["labels"]]
    return [{"input_ids": ids[i:i + max_length], "labels": labels[i:i + max_length]}
            for i in range(0, len(ids), max_length)]


class Collator:
    """Right-pads a batch: input_ids with the pad id, labels with -100, and an attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch
        out = {}
        for key, fill in (("input_ids", self.pad_id), ("labels", IGNORE)):
            width = max(len(e[key]) for e in batch)
            out[key] = torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in batch], dtype=torch.long)
            if key == "input_ids":
                out["attention_mask"] = torch.tensor([[1] * len(e[key]) + [0] * (width - len(e[key])) for e in batch],
                                                     dtype=torch.long)
        return out


def pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    return 0
