"""Cases for the libraries with the AdapterHub API: adapterkit (transformers 5.x) and `adapters` (transformers 4.57).

Both spell the API the same way (`init`, `add_adapter`, `train_adapter`, `merge_adapter`, config classes of the same
names and fields), so one builder serves both; only `reset_adapter` differs (`adapters` takes no name).
"""

from __future__ import annotations

import importlib

import torch

from common import Case, inference_case, make_model, train_case

# method -> (config class, fields): identical in adapterkit and `adapters`.
METHODS = {
    "lora": ("LoRAConfig", {"r": 8, "alpha": 16}),
    "pfeiffer": ("SeqBnConfig", {}),
    "prefix": ("PrefixTuningConfig", {"prefix_length": 30}),
    "ia3": ("IA3Config", {}),
    "unipelt": ("UniPELTConfig", {}),
    "loha": ("LoHaConfig", {"r": 8, "alpha": 16}),  # adapterkit only (peft's method; `adapters` has none)
    "dora": ("DoRAConfig", {"r": 8, "alpha": 16}),
    "vera": ("VeraConfig", {"r": 8}),  # q/v, d = 0.1, b = 0 (alpha = r: no scaling, as peft's)
    "prompt": ("PromptTuningConfig", {"prompt_length": 10}),
}
KEYS = ("lora_train", "lora_infer", "lora_merged", "pfeiffer_train", "pfeiffer_infer", "prefix_train",
        "prefix_infer", "ia3_train", "unipelt_train", "add_lora", "merge_lora", "dora_train", "dora_infer",
        "vera_train", "vera_infer", "prompt_train", "prompt_infer")
ADAPTERKIT_ONLY = ("loha_train", "loha_infer")


def keys_for(library: str) -> tuple:
    return KEYS + ADAPTERKIT_ONLY if library == "adapterkit" else KEYS


def method_config(lib, method: str):
    cls, fields = METHODS[method]
    return getattr(lib, cls)(**fields)


class HubCases:
    """Builds the cases of `library` ("adapterkit" or "adapters"); train/inference cases of one method share a model."""

    def __init__(self, library: str, shape, batch):
        self.name = library
        self.lib = importlib.import_module(library)
        self.shape, self.batch = shape, batch
        self._models: dict = {}

    def _model(self, method: str):
        """A model with one adapter of `method`, trained (`train_adapter`) so it is active."""
        if method not in self._models:
            model = make_model(self.shape)
            self.lib.init(model)
            model.add_adapter(method, config=method_config(self.lib, method))
            model.train_adapter(method)
            model.to(self.shape.device)  # in case a library builds adapters on the CPU
            if self.shape.dtype != "float32" and self.name == "adapterkit":
                model.adapter_to(method, dtype=torch.float32)  # as peft keeps them by default
            self._models[method] = model
        return self._models[method]

    def _reset(self, model, name: str) -> None:
        if self.name == "adapters":
            model.reset_adapter()
        else:
            model.reset_adapter(name)

    def build(self, key: str) -> Case:
        method, _, what = key.partition("_")
        if what == "train":
            return train_case(self._model(method), self.batch)
        if what == "infer":
            return inference_case(self._model(method), self.batch)
        if key == "lora_merged":
            model = make_model(self.shape)
            self.lib.init(model)
            model.add_adapter("lora", config=method_config(self.lib, "lora"), set_active=True)
            model.to(self.shape.device).merge_adapter("lora")
            return inference_case(model, self.batch)
        if key == "add_lora":
            model = make_model(self.shape)
            self.lib.init(model)

            def prepare():
                if "tmp" in model.adapters_config:
                    model.delete_adapter("tmp")
            return Case(lambda: model.add_adapter("tmp", config=method_config(self.lib, "lora")), prepare)
        if key == "merge_lora":
            model = make_model(self.shape)
            self.lib.init(model)
            model.add_adapter("lora", config=method_config(self.lib, "lora"), set_active=True)
            model.eval()
            return Case(lambda: model.merge_adapter("lora"), lambda: self._reset(model, "lora"))
        raise KeyError(f"{self.name} has no case {key!r}; cases: {', '.join(KEYS)}")
