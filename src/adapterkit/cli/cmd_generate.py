"""`adapterkit generate`: greedy continuations of prompts from a base LM with a saved adapter (merged or not);
one prompt at a time, so each output is exactly `model.generate()` on that prompt (no padding in play)."""

from __future__ import annotations

import json
from pathlib import Path

ORDER = 2.5


def register(sub) -> None:
    from .arguments import positive_int
    p = sub.add_parser("generate", help="generate text with a saved adapter (decoder or encoder-decoder)",
                       description="Load the base language model and a saved adapter and print one JSON line per "
                                   "prompt with its greedy continuation. The base model defaults to the one "
                                   "recorded by `adapterkit train` next to the adapter.")
    p.add_argument("--adapter-dir", default=None, help="directory written by `adapterkit train` (…/adapter); "
                                                       "without it the --model alone generates (e.g. …/model of a "
                                                       "full fine-tune)")
    p.add_argument("--model", default=None, help="base checkpoint directory (default: the run's metrics.json)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts-file", default=None,
                   help="one prompt a line, or JSONL with a 'prompt' or chat 'messages' field per line")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights first (LoRA, (IA)^3, "
                                                        "LoHa, LoKr)")
    p.add_argument("--chat", action="store_true", help="wrap each --prompt as a user turn of the chat template")
    p.add_argument("--output", default=None, help="write the JSON lines here too")
    p.set_defaults(run=run)


def read_prompts(args) -> list:
    """Strings, or lists of chat turns (from JSONL `messages`)."""
    from .data import DataError
    prompts: list = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if path.suffix.lower() in (".jsonl", ".json"):
            from .lm_read import read_jsonl
            for i, row in enumerate(read_jsonl(path), 1):
                value = row.get("messages") or row.get("prompt")
                if not value or not isinstance(value, (str, list)):
                    raise DataError(f"{path}: row {i} has no 'prompt' (string) or 'messages' (list of turns)")
                prompts.append(value)
        else:
            if not path.is_file():
                raise DataError(f"{path}: file not found")
            prompts += [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        from .errors import UsageError
        raise UsageError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def encode_prompt(tokenizer, prompt, chat: bool):
    if isinstance(prompt, str) and not chat:
        return tokenizer(prompt, return_tensors="pt")
    from .errors import UsageError
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("chat prompts need a tokenizer with a chat template; this tokenizer has none")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")


def run(args) -> int:
    from .models import offline
    offline()
    import torch

    from .errors import UsageError
    from .lm_data import pad_id
    from .lm_models import device, load_lm_model, load_tokenizer, model_for_adapter
    from .models import resolve_model_path
    from .outputs import output_file

    adapter_dir = Path(args.adapter_dir) if args.adapter_dir else None
    if adapter_dir is None and (args.model is None or args.merge):
        raise UsageError("give --adapter-dir (a saved adapter)" if args.model is None else
                         "--merge needs --adapter-dir (the adapter to merge)")
    if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
        raise UsageError(f"{adapter_dir}: no adapter_config.json (give the adapter directory that train saved)")
    prompts = read_prompts(args)
    output = output_file(args.output) if args.output else None
    path = resolve_model_path(args.model if adapter_dir is None else model_for_adapter(args.model, adapter_dir))
    tokenizer = load_tokenizer(path, adapter_dir)
    model, _ = load_lm_model(path)
    if adapter_dir is not None:
        name = model.load_adapter(adapter_dir, set_active=True)
        if args.merge:
            model.merge_adapter(name)
    model.to(device()).eval()
    lines = []
    with torch.no_grad():
        for prompt in prompts:
            enc = encode_prompt(tokenizer, prompt, args.chat).to(device())
            ids = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad_id(tokenizer))[0]
            new = (ids[1:] if model.config.is_encoder_decoder else ids[enc["input_ids"].shape[1]:]).cpu()
            row = {"prompt": prompt, "completion": tokenizer.decode(new, skip_special_tokens=True),
                   "token_ids": new.tolist()}
            lines.append(json.dumps(row, ensure_ascii=False))
            print(lines[-1], flush=True)
    if output is not None:
        output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0
