"""`adapterkit train/eval/generate --task causal-lm | seq2seq` on tiny Llama, GPT-2 and T5 checkpoints built here.

The tokenizer is a word-level one trained on the tests' own text, with a chat template, saved next to each tiny
model, so `--model DIR` loads both; nothing is downloaded. The loss and the perplexity are checked against a hand
computation (cross-entropy over the completion tokens only, one unpadded example at a time), `generate` against
the library's `model.generate()` with the same adapter.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration,
                          GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration)

import adapterkit
from adapterkit.cli import main

WORDS = "red green blue cat dog bird sun moon star one two three four tree river stone".split()
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def rows(n: int, seed: int = 0) -> list[dict]:
    """Prompt: four words; completion: the same words reversed (learnable, and only from the prompt)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        words = [WORDS[i] for i in torch.randint(0, len(WORDS), (4,), generator=g)]
        out.append({"prompt": "reverse " + " ".join(words) + " :", "completion": " ".join(reversed(words))})
    return out


def write_jsonl(path, items) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return str(path)


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.train_from_iterator([" ".join(WORDS + ["reverse", ":", "hello", "hi"])],
                            trainers.WordLevelTrainer(special_tokens=SPECIAL))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(arch: str, path):
    tok = tokenizer()
    ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=64, initializer_range=0.2, **ids))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                           initializer_range=0.2, **ids))
    elif arch == "bart":
        model = BartForConditionalGeneration(BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=2,
                                                        decoder_layers=2, encoder_attention_heads=4,
                                                        decoder_attention_heads=4, encoder_ffn_dim=64,
                                                        decoder_ffn_dim=64, max_position_embeddings=64,
                                                        decoder_start_token_id=3, forced_eos_token_id=3, **ids))
    else:
        model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                    num_heads=4, decoder_start_token_id=0, **ids))
    model.generation_config.update(pad_token_id=0, eos_token_id=3, bos_token_id=2)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


# a larger init (above) and LoRA on every projection: a tiny random model with its LM head frozen then learns fast
LORA = "lora[r=8,alpha=16,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmdata")
    return {"train": write_jsonl(d / "train.jsonl", rows(32)), "dev": write_jsonl(d / "dev.jsonl", rows(8, seed=1))}


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def trained(request, data, tmp_path_factory):
    base = build(request.param, tmp_path_factory.mktemp(request.param))
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", data["train"], "--dev-file",
               data["dev"], "--method", LORA, "--max-steps", "30", "--batch-size", "8", "--lr", "3e-2", "--warmup-ratio", "0", "--output-dir", str(out), "--no-plot"])
    assert rc == 0
    return base, out, json.loads((out / "metrics.json").read_text())


def test_thirty_steps_lower_the_loss(trained):
    _, out, report = trained
    losses = [h["loss"] for h in report["history"] if "loss" in h]
    assert report["steps"] == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0]
    assert report["format"] == "prompt" and report["main_metric"] == "perplexity"
    assert {"adapter_config.json", "adapter.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}


def _hand_loss(model, tok, items) -> tuple[float, float]:
    """(mean CE over completion tokens + EOS, mean CE over every predicted token), one unpadded example at a time;
    ids by vocabulary lookup of the whitespace-split words, not through the CLI's encoder."""
    vocab = tok.get_vocab()
    comp, comp_n, every, every_n = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for r in items:
            prompt = [vocab[w] for w in r["prompt"].split()]
            completion = [vocab[w] for w in r["completion"].split()] + [tok.eos_token_id]
            ids = torch.tensor([prompt + completion])
            logp = F.log_softmax(model(ids).logits[0].float(), -1)
            nll = -logp[:-1].gather(1, ids[0, 1:, None])[:, 0]  # position t predicts token t + 1
            comp += float(nll[len(prompt) - 1:].sum())
            comp_n += len(completion)
            every += float(nll.sum())
            every_n += len(nll)
    return comp / comp_n, every / every_n


def _load(base, adapter_dir=None):
    model = adapterkit.init(AutoModelForCausalLM.from_pretrained(base).eval())
    if adapter_dir is not None:
        model.load_adapter(adapter_dir, set_active=True)
    return model.eval()


def test_the_loss_ignores_prompt_tokens(trained):
    from adapterkit.cli.lm_data import Collator, load_lm
    base, out, _ = trained
    tok = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
    items = rows(6, seed=7)
    path = out.parent / f"batch_{out.name}.jsonl"
    write_jsonl(path, items)
    data = load_lm(path, tok, 64, seq2seq=False)
    assert data.fmt == "prompt"
    for r, e in zip(items, data.examples):  # the prompt's tokens are -100, the completion's are themselves
        n_prompt = len(r["prompt"].split())
        assert e["labels"][:n_prompt] == [-100] * n_prompt and e["labels"][n_prompt:] == e["input_ids"][n_prompt:]
    model = _load(base, out / "adapter")
    batch = Collator(tok.pad_token_id)(data.examples)  # one padded batch, as the Trainer feeds it
    with torch.no_grad():
        loss = float(model(**batch).loss)
    completion_only, every_token = _hand_loss(model, tok, items)
    assert loss == pytest.approx(completion_only, rel=1e-5)
    assert abs(loss - every_token) > 1e-2  # the check could tell the two apart


def test_the_commands_first_loss_is_the_hand_computed_one(data, tmp_path):
    """One batch of the whole training file: step 1's logged loss is the base model's (LoRA starts as a no-op)
    completion-only cross-entropy over it, whatever order the Trainer draws the rows in. Llama: no dropout in
    training mode (GPT-2's would make the logged loss differ)."""
    base = build("llama", tmp_path / "llama")
    out = tmp_path / "run"
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", data["train"], "--max-steps",
                 "1", "--batch-size", "32", "--output-dir", str(out), "--no-plot"]) == 0
    logged = json.loads((out / "metrics.json").read_text())["history"][0]["loss"]
    items = [json.loads(line) for line in open(data["train"])]
    completion_only, every_token = _hand_loss(_load(base), PreTrainedTokenizerFast.from_pretrained(base), items)
    assert logged == pytest.approx(completion_only, rel=1e-5) and abs(logged - every_token) > 1e-2


def test_eval_perplexity_is_exp_of_the_completion_loss(trained, data, capsys):
    base, out, report = trained
    capsys.readouterr()
    assert main(["eval", "--task", "causal-lm", "--adapter-dir", str(out / "adapter"), "--dev-file",
                 data["dev"], "--batch-size", "3"]) == 0  # the base model comes from the run's metrics.json
    result = json.loads(capsys.readouterr().out)["metrics"]
    tok = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
    items = [json.loads(line) for line in open(data["dev"])]
    completion_only, _ = _hand_loss(_load(base, out / "adapter"), tok, items)
    assert result["perplexity"] == pytest.approx(math.exp(completion_only), rel=1e-5)
    assert result["tokens"] == sum(len(r["completion"].split()) + 1 for r in items)
    assert report["metrics"]["perplexity"] == pytest.approx(result["perplexity"], rel=1e-5)  # train's dev report
    assert result["perplexity"] < math.exp(_hand_loss(_load(base), tok, items)[0])  # training helped on dev


def _cli_generate(capsys, args) -> list[dict]:
    capsys.readouterr()
    assert main(["generate", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_generate_equals_the_library(trained, capsys):
    base, out, _ = trained
    tok = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
    prompts = [r["prompt"] for r in rows(3, seed=11)]
    args = ["--adapter-dir", str(out / "adapter"), "--max-new-tokens", "6"]
    cli = _cli_generate(capsys, [*args, *[a for p in prompts for a in ("--prompt", p)]])
    merged = _cli_generate(capsys, [*args, "--merge", *[a for p in prompts for a in ("--prompt", p)]])
    model, plain = _load(base, out / "adapter"), _load(base)
    differs = False
    for prompt, row, row_merged in zip(prompts, cli, merged):
        enc = tok(prompt, return_tensors="pt")
        n = enc["input_ids"].shape[1]
        with torch.no_grad():
            want = model.generate(**enc, max_new_tokens=6, do_sample=False)[0, n:].tolist()
            without = plain.generate(**enc, max_new_tokens=6, do_sample=False)[0, n:].tolist()
        assert row["token_ids"] == want and row["completion"] == tok.decode(want, skip_special_tokens=True)
        assert row_merged["token_ids"] == want
        differs |= want != without
    assert differs  # the adapter changes the continuation, so equality above means it was applied


def test_chat_messages_train_on_assistant_tokens(tmp_path, capsys):
    from adapterkit.cli.lm_data import load_lm
    base = build("llama", tmp_path / "llama")
    chats = [{"messages": [{"role": "system", "content": "hi"},
                           {"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]},
                           {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
             for r in rows(8)]
    path = write_jsonl(tmp_path / "chat.jsonl", chats)
    tok = PreTrainedTokenizerFast.from_pretrained(base)
    data = load_lm(path, tok, 64, seq2seq=False)
    assert data.fmt == "messages"
    learned = tok.decode([t for t in data.examples[0]["labels"] if t != -100])
    assert learned == f"{chats[0]['messages'][2]['content']} <|end|> hi <|end|>"
    out = tmp_path / "run"
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", path, "--max-steps", "2",
                 "--batch-size", "4", "--output-dir", str(out), "--no-plot"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["steps"] == 2 and report["format"] == "messages" and math.isfinite(report["train_loss"])
    rows_out = _cli_generate(capsys, ["--adapter-dir", str(out / "adapter"), "--chat", "--prompt", "reverse red :",
                                      "--max-new-tokens", "3"])
    model = _load(base, out / "adapter")
    text = tok.apply_chat_template([{"role": "user", "content": "reverse red :"}], tokenize=False,
                                   add_generation_prompt=True)
    enc = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        want = model.generate(**enc, max_new_tokens=3, do_sample=False)[0, enc["input_ids"].shape[1]:].tolist()
    assert rows_out[0]["token_ids"] == want


def test_chat_labels_with_a_byte_level_bpe_and_chatml(tmp_path):
    """A GPT-2-style byte-level BPE with a ChatML template: the labelled tokens are exactly each assistant turn and
    its end-of-turn marker, nothing of the system / user turns or the generation prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from adapterkit.cli.lm_data import load_lm
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["hello there, how are you? I am fine thanks. What is two plus three? It is five."] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                                "<|im_end|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    turns = [("system", "be nice"), ("user", "What is two plus three?"), ("assistant", "It is five."),
             ("user", "how are you?"), ("assistant", "I am fine thanks.")]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": r, "content": c} for r, c in turns]}])
    example = load_lm(path, tok, 512, seq2seq=False).examples[0]
    assert tok.decode([t for t in example["labels"] if t != -100]) == \
        "It is five.<|im_end|>\nI am fine thanks.<|im_end|>\n"
    assert tok.decode(example["input_ids"]) == tok.apply_chat_template(
        [{"role": r, "content": c} for r, c in turns], tokenize=False)


@pytest.mark.parametrize("method", ["seq_bn", "prefix_tuning[prefix_length=4,bottleneck_size=16]", "ia3", "loha"])
def test_other_methods_train(method, data, tmp_path):
    base = build("gpt2", tmp_path / "gpt2")
    out = tmp_path / "run"
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", data["train"], "--method",
                 method, "--max-steps", "2", "--batch-size", "8", "--output-dir", str(out), "--no-plot"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["steps"] == 2 and math.isfinite(report["metrics"]["perplexity"])


def test_text_with_packing_and_full_fine_tuning_train(tmp_path, capsys):
    base = build("llama", tmp_path / "llama")
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": f"{r['prompt']} {r['completion']}"} for r in rows(16)])
    out = tmp_path / "packed"
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", path, "--packing",
                 "--max-length", "16", "--max-steps", "2", "--batch-size", "4", "--output-dir", str(out),
                 "--no-plot"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["format"] == "text" and report["packing"] and report["train_examples"] == math.ceil(16 * 11 / 16)
    out = tmp_path / "full"
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", path, "--method", "full",
                 "--max-steps", "2", "--batch-size", "8", "--lr", "1e-2", "--output-dir", str(out), "--no-plot"]) == 0
    tuned, plain = AutoModelForCausalLM.from_pretrained(out / "model"), AutoModelForCausalLM.from_pretrained(base)
    assert not torch.equal(tuned.lm_head.weight, plain.lm_head.weight)  # every weight trained, and was saved
    rows_out = _cli_generate(capsys, ["--model", str(out / "model"), "--prompt", "reverse red :", "--max-new-tokens",
                                      "3"])
    enc = PreTrainedTokenizerFast.from_pretrained(base)("reverse red :", return_tensors="pt")
    with torch.no_grad():
        want = tuned.eval().generate(**enc, max_new_tokens=3, do_sample=False)[0, enc["input_ids"].shape[1]:]
    assert rows_out[0]["token_ids"] == want.tolist()


def test_generate_reads_prompt_files(trained, tmp_path, capsys):
    base, out, _ = trained
    text = tmp_path / "prompts.txt"
    text.write_text("reverse red blue :\n\nreverse cat dog :\n")
    chat = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "reverse sun :"},
                                                    {"messages": [{"role": "user", "content": "hello"}]}])
    args = ["--adapter-dir", str(out / "adapter"), "--max-new-tokens", "3"]
    from_text = _cli_generate(capsys, [*args, "--prompts-file", str(text)])
    assert [r["prompt"] for r in from_text] == ["reverse red blue :", "reverse cat dog :"]
    one = _cli_generate(capsys, [*args, "--prompt", "reverse cat dog :"])
    assert from_text[1]["token_ids"] == one[0]["token_ids"] and len(one[0]["token_ids"]) <= 3
    from_jsonl = _cli_generate(capsys, [*args, "--prompts-file", chat])
    chat_one = _cli_generate(capsys, [*args, "--chat", "--prompt", "hello"])
    assert len(from_jsonl) == 2 and from_jsonl[1]["token_ids"] == chat_one[0]["token_ids"]
    capsys.readouterr()
    assert main(["generate", *args]) == 2
    assert capsys.readouterr().err.strip() == "adapterkit: error: give --prompt TEXT (repeatable) or --prompts-file FILE"


def test_packing_concatenates_and_cuts(tmp_path):
    from adapterkit.cli.lm_data import load_lm
    texts = [{"text": " ".join(WORDS[i:i + 5])} for i in range(6)]
    path = write_jsonl(tmp_path / "text.jsonl", texts)
    tok = tokenizer()
    data = load_lm(path, tok, 8, seq2seq=False, packing=True)
    stream = [t for r in texts for t in tok(r["text"])["input_ids"] + [tok.eos_token_id]]
    assert [t for e in data.examples for t in e["input_ids"]] == stream
    assert all(len(e["input_ids"]) == 8 for e in data.examples[:-1]) and len(data.examples) == math.ceil(36 / 8)
    assert all(e["labels"] == e["input_ids"] for e in data.examples)


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_seq2seq_trains_and_generates(arch, tmp_path, capsys):
    base = build(arch, tmp_path / arch)
    items = [{"source": r["prompt"], "target": r["completion"]} for r in rows(16)]
    path = write_jsonl(tmp_path / "s2s.jsonl", items)
    out = tmp_path / "run"
    assert main(["train", "--task", "seq2seq", "--model", str(base), "--train-file", path, "--max-steps", "20",
                 "--batch-size", "8", "--lr", "1e-2", "--warmup-ratio", "0", "--method", "lora[r=8]",
                 "--output-dir", str(out), "--no-plot"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    losses = [h["loss"] for h in report["history"]]
    assert report["steps"] == 20 and report["task"] == "seq2seq" and losses[-1] < losses[0]
    rows_out = _cli_generate(capsys, ["--adapter-dir", str(out / "adapter"), "--prompt", items[0]["source"],
                                      "--max-new-tokens", "5"])
    model = adapterkit.init(AutoModelForSeq2SeqLM.from_pretrained(base).eval())
    model.load_adapter(out / "adapter", set_active=True)
    tok = PreTrainedTokenizerFast.from_pretrained(base)
    with torch.no_grad():
        want = model.generate(**tok(items[0]["source"], return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert rows_out[0]["token_ids"] == want[0, 1:].tolist()
    capsys.readouterr()
    assert main(["eval", "--task", "seq2seq", "--adapter-dir", str(out / "adapter"), "--dev-file", path]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated["perplexity"] == pytest.approx(report["metrics"]["perplexity"], rel=1e-5)
    assert evaluated["tokens"] == sum(len(r["target"].split()) + 1 for r in items)  # the target and its EOS
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", path]) == 2  # T5 is not a decoder


BAD = {
    "missing field": ('{"prompt": "reverse red :", "completion": "red"}\n{"prompt": "reverse blue :"}\n',
                      "line 2: 'completion' is missing or empty"),
    "bad JSON line": ('{"prompt": "reverse red :", "completion": "red"}\n{"prompt": "x", \n', "line 2"),
    "empty": ("", "no data rows"),
    "no usable field": ('{"question": "a", "answer": "b"}\n', "fields found: answer, question"),
    "messages without assistant": ('{"messages": [{"role": "user", "content": "hi"}]}\n', "no 'assistant' turn"),
    "number among strings": ('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": 5}\n',
                             "line 3: 'completion' must be a string, not int"),
    "not an object": ('{"text": "red"}\n[1, 2]\n', "line 2 is not a JSON object"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_file_is_one_line_and_exit_2(case, tmp_path, capsys):
    content, match = BAD[case]
    base = build("gpt2", tmp_path / "gpt2")
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    capsys.readouterr()
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", str(path), "--max-steps",
                 "1", "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adapterkit: error: ") and str(path) in err[0] and match in err[0]


def test_a_chat_template_that_rejects_the_messages_is_one_line(tmp_path, capsys):
    base = build("llama", tmp_path / "llama")
    tok = PreTrainedTokenizerFast.from_pretrained(base)
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
                         + CHAT_TEMPLATE)
    tok.save_pretrained(base)
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": turns},
                                                 {"messages": [{"role": "system", "content": "red"}, *turns]}])
    capsys.readouterr()
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", path, "--max-steps", "1",
                 "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"adapterkit: error: {path}: line 2: the tokenizer's chat template rejects these messages "
                   "(no system turns)"]


def test_merge_of_an_unmergeable_adapter_is_one_line(data, tmp_path, capsys):
    base = build("gpt2", tmp_path / "gpt2")
    out = tmp_path / "run"
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", data["train"], "--method",
                 "seq_bn", "--max-steps", "1", "--output-dir", str(out), "--no-plot"]) == 0
    capsys.readouterr()
    assert main(["generate", "--adapter-dir", str(out / "adapter"), "--prompt", "red", "--merge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adapterkit: error: ") and "merge" in err[0]


def test_bad_json_line_in_a_fresh_process_prints_one_line(tmp_path):
    """datasets logs its own error through a handler made at import; the process's stderr must still be one line."""
    base = build("gpt2", tmp_path / "gpt2")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "red"}\n{oops\n')
    proc = subprocess.run([sys.executable, "-m", "adapterkit", "train", "--task", "causal-lm", "--model", str(base),
                           "--train-file", str(path), "--output-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"adapterkit: error: {path}: line 2"), proc.stderr


def _wide_llama(path):
    """bitsandbytes' CPU 4-bit kernels need in_features >= 64: a 64-wide tiny Llama with the test tokenizer."""
    tok = tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, initializer_range=0.2, pad_token_id=0,
                                         bos_token_id=2, eos_token_id=3))
    model.generation_config.update(pad_token_id=0, eos_token_id=3, bos_token_id=2)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_quantize_4bit_trains_a_qlora_adapter_that_loads_on_the_float_base(data, tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    base, out = _wide_llama(tmp_path / "base"), tmp_path / "run"
    rc = main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", data["train"], "--dev-file",
               data["dev"], "--method", LORA, "--max-steps", "20", "--batch-size", "8", "--lr", "3e-2",
               "--warmup-ratio", "0", "--quantize", "4bit", "--output-dir", str(out), "--no-plot"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["quantize"] == "4bit" and report["quantized_modules"] == 2 * 7  # every linear of both layers
    losses = [h["loss"] for h in report["history"] if "loss" in h]
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0]
    model = _load(base, out / "adapter")  # the adapter trained on 4-bit runs on the float base
    assert model.adapter_summary(as_dict=True)[0]["#param"] > 0
    assert main(["train", "--task", "causal-lm", "--model", str(base), "--train-file", data["train"], "--method",
                 "full", "--quantize", "4bit", "--output-dir", str(tmp_path / "full"), "--no-plot"]) == 2
    assert "pick an adapter method" in capsys.readouterr().err
