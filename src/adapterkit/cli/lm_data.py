"""Language-modelling data for `--task causal-lm` / `--task seq2seq`: JSONL read through HF `datasets`, checked
row by row, then tokenised into `input_ids` + `labels` where every token outside the completion is -100.

Formats (by the fields of the file): `text` (loss on every token), `prompt` + `completion` (loss on the
completion), chat `messages` (the tokenizer's chat template; loss on the assistant turns), and for seq2seq
`source` + `target` (or prompt + completion). Any problem is one `DataError` line naming the file, the line and
the field.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .data import DataError

IGNORE = -100
CAUSAL_FORMATS = {"messages": ("messages",), "prompt": ("prompt", "completion"), "text": ("text",)}
SEQ2SEQ_FORMATS = {"source": ("source", "target"), "prompt": ("prompt", "completion")}


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL (or JSON) file, read by `datasets`. A file it cannot read is read line by line: a line
    that is not a JSON object is the error; if every line is one (Arrow could not unify a field's types across rows,
    say an int `completion` among strings), those rows go on to the row checks, which name the line and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"{path}: unsupported format {path.suffix or '(no extension)'} for a language-modelling "
                        "task; use .jsonl (one JSON object a line)")
    if not path.read_bytes().strip():
        raise DataError(f"{path}: no data rows (the file is empty)")
    import datasets
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # datasets logs its own multi-line error before raising; ours is the one line
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory() as cache:
            rows = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache,
                                         keep_in_memory=True).to_list()
    except Exception:  # noqa: BLE001  (datasets / pyarrow raise many kinds; the scan below names the line)
        rows = _read_lines(path)
    finally:
        logger.setLevel(level)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def _read_lines(path: Path) -> list[dict]:
    """Every line a JSON object (bounded nesting), or a DataError naming the first line that is not."""
    from ..errors import CheckpointError
    from ..io.files import parse_json
    rows = []
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = parse_json(line, f"{path}: line {number}")
            except CheckpointError as exc:
                raise DataError(str(exc).replace("; the file is corrupted or truncated", "")) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is not a JSON object (found a JSON {type(row).__name__})")
            rows.append(row)
    return rows


def _line_of(path: Path, row: int) -> int:
    """The file line of data row `row` (0-based; blank lines hold no row)."""
    seen = -1
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, 1):
            seen += bool(line.strip())
            if seen == row:
                return number
    return row + 1


def detect_format(path: Path, rows: list[dict], seq2seq: bool) -> str:
    formats = SEQ2SEQ_FORMATS if seq2seq else CAUSAL_FORMATS
    fields = set().union(*(r for r in rows[:1000]))
    for name, needed in formats.items():
        if set(needed) <= fields:
            return name
    allowed = " or ".join(f"'{' + '.join(n)}'" if len(n) > 1 else f"'{n[0]}'" for n in formats.values())
    raise DataError(f"{path}: no {allowed} field(s) for --task {'seq2seq' if seq2seq else 'causal-lm'}; "
                    f"fields found: {', '.join(sorted(fields)) or '(none)'}")


def check_rows(path: Path, rows: list[dict], fmt: str, seq2seq: bool) -> None:
    needed = (SEQ2SEQ_FORMATS if seq2seq else CAUSAL_FORMATS)[fmt]
    for i, row in enumerate(rows):
        for name in needed:
            value = row.get(name)
            problem = _messages_problem(value) if name == "messages" else (
                None if isinstance(value, str) and value.strip() else "is missing or empty" if value in (None, "")
                else f"must be a string, not {type(value).__name__}")
            if problem:
                raise DataError(f"{path}: line {_line_of(path, i)}: {name!r} {problem}")


def _messages_problem(value) -> str | None:
    if not isinstance(value, list) or not value:
        return "is missing or empty (a list of {'role', 'content'} objects)"
    for turn in value:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not isinstance(
                turn.get("content"), str):
            return "holds a turn that is not a {'role': str, 'content': str} object"
    if not any(t["role"] == "assistant" for t in value):
        return "has no 'assistant' turn (the assistant turns are what the model learns)"
    return None


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
            raise DataError(f"{path}: line {_line_of(path, i)}: {exc}") from None
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
