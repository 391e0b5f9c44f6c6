"""The PEFT format's prompt tuning (peft_type "PROMPT_TUNING"): one tensor `prompt_embeddings`
(num_virtual_tokens * num_transformer_submodules, token_dim). peft puts the prompt among the input embeddings
before the model adds positions: that is insert_at="inputs", which reading sets and writing requires. A
checkpoint with two transformer submodules (peft's seq2seq default: a second prompt on the decoder inputs) has no
adapterkit form (ours prompts the encoder only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...errors import AdapterConfigError, CheckpointError
from .config import PromptTuningConfig

PEFT_TYPE = "PROMPT_TUNING"
READERS: dict = {}  # no projection weights: the whole checkpoint is read by `read_checkpoint`
PARAMS: dict = {}
INITS = {"RANDOM": "random_uniform", "TEXT": "from_string", "SAMPLE_VOCAB": "sample_vocab"}
TASK_TYPES = (("ForCausalLM", "CAUSAL_LM"), ("LMHeadModel", "CAUSAL_LM"), ("ForConditionalGeneration", "SEQ_2_SEQ_LM"),
              ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"), ("ForSequenceClassification", "SEQ_CLS"),
              ("ForTokenClassification", "TOKEN_CLS"), ("ForQuestionAnswering", "QUESTION_ANS"))


def read_checkpoint(source: Path, data: Mapping[str, Any], weights: Mapping, weights_file: Path):
    """(config class, config fields, adapter tensors) of a PEFT prompt-tuning checkpoint."""
    submodules = data.get("num_transformer_submodules") or 1
    if submodules != 1:
        raise CheckpointError(f"{source}: num_transformer_submodules={submodules!r}: peft also prompts the decoder "
                              "inputs there; adapterkit's prompt tuning prompts the encoder only (allowed: 1)")
    init = data.get("prompt_tuning_init", "RANDOM")
    if init not in INITS:
        raise CheckpointError(f"{source}: prompt_tuning_init={init!r}; allowed: {', '.join(INITS)}")
    if set(weights) != {"prompt_embeddings"}:
        raise CheckpointError(f"{weights_file}: a PEFT prompt-tuning file holds exactly 'prompt_embeddings'; found "
                              f"{', '.join(sorted(weights)) or 'nothing'}")
    tensor = weights["prompt_embeddings"]
    length, dim = data.get("num_virtual_tokens"), data.get("token_dim")
    if tensor.dim() != 2 or (length is not None and tensor.shape[0] != length) or (
            dim is not None and tensor.shape[1] != dim):
        raise CheckpointError(f"{weights_file}: prompt_embeddings has shape {tuple(tensor.shape)}; the config says "
                              f"({length}, {dim})")
    fields = {"prompt_length": int(tensor.shape[0]), "prompt_init": INITS[init], "insert_at": "inputs"}
    if INITS[init] == "from_string":  # peft keeps a tokenizer name with other inits too; it means nothing there
        fields.update(prompt_init_text=data.get("prompt_tuning_init_text"),
                      tokenizer_name_or_path=data.get("tokenizer_name_or_path"))
    return PromptTuningConfig, fields, {"shared.prompt.prompt_embedding.weight": tensor}


READ_CHECKPOINT = {PEFT_TYPE: read_checkpoint}


def task_type(model) -> str:
    cls = type(model).__name__
    return next((task for suffix, task in TASK_TYPES if cls.endswith(suffix)), "FEATURE_EXTRACTION")


def write_checkpoint(model, name: str) -> tuple[dict, dict]:
    """(tensors, adapter_config.json dict) of adapter `name` in peft's form."""
    state = model.adapter_state
    config = state.configs[name]
    module = state.module_at(name, ("model", "prompt"))
    if module.insert_at != "inputs":
        raise AdapterConfigError(
            f"adapter {name!r} puts its prompt after the embedding module (insert_at='embeddings', the `adapters` "
            "package's placement); peft puts it among the input embeddings, so positions and the embedding norm "
            "apply to it: only insert_at='inputs' adapters save in the PEFT format; save as 'adapterkit' or "
            "'adapterhub'")
    if config.combine != "prefix":
        raise AdapterConfigError(f"adapter {name!r}: combine={config.combine!r}; peft prepends the prompt "
                                 "(combine='prefix' only); save as format='adapterkit'")
    weight = module.prompt_embedding.weight.detach()
    init = {v: k for k, v in INITS.items()}[config.prompt_init]
    data = {
        "peft_type": PEFT_TYPE, "task_type": task_type(model), "inference_mode": True, "revision": None,
        "base_model_name_or_path": getattr(model.config, "_name_or_path", None) or None, "modules_to_save": None,
        "auto_mapping": {"base_model_class": type(model).__name__, "parent_library": type(model).__module__},
        "num_virtual_tokens": int(weight.shape[0]), "token_dim": int(weight.shape[1]),
        "num_transformer_submodules": 1, "num_attention_heads": None, "num_layers": None,
        "prompt_tuning_init": init, "prompt_tuning_init_text": config.prompt_init_text,
        "tokenizer_name_or_path": config.tokenizer_name_or_path, "tokenizer_kwargs": None,
    }
    return {"prompt_embeddings": weight.contiguous()}, data
