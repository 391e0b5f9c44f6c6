"""Cases for `peft` (transformers 5.x, in the adapterkit process). peft has no bottleneck adapters or UniPELT.

Settings match the adapterkit cases: LoRA r=8, alpha=16 on query/value, no dropout; prefix tuning of length 30
through a 512-wide MLP (peft's `prefix_projection`, as adapterkit's and `adapters`' default `flat=False`);
(IA)^3 with peft's own default targets for BERT (key, value, and the FFN output projection's input); LoHa r=8,
alpha=16 on query/value; DoRA the same as LoRA with `use_dora=True`; VeRA r=8 on query/value; prompt tuning
10 virtual tokens.
"""

from __future__ import annotations

from common import Case, inference_case, make_model, train_case

KEYS = ("lora_train", "lora_infer", "lora_merged", "prefix_train", "prefix_infer", "ia3_train", "loha_train",
        "loha_infer", "add_lora", "merge_lora", "dora_train", "dora_infer",
        "vera_train", "vera_infer", "prompt_train", "prompt_infer")


def _config(method: str):
    import peft
    if method == "lora":
        return peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"])
    if method == "prefix":
        return peft.PrefixTuningConfig(task_type=peft.TaskType.FEATURE_EXTRACTION, num_virtual_tokens=30,
                                       prefix_projection=True, encoder_hidden_size=512)
    if method == "ia3":
        return peft.IA3Config()
    if method == "dora":
        return peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, use_dora=True, target_modules=["query", "value"])
    if method == "loha":
        return peft.LoHaConfig(r=8, alpha=16, target_modules=["query", "value"])
    if method == "vera":
        return peft.VeraConfig(r=8, target_modules=["query", "value"])
    if method == "prompt":
        return peft.PromptTuningConfig(task_type=peft.TaskType.FEATURE_EXTRACTION, num_virtual_tokens=10)
    raise KeyError(method)


class PeftCases:
    name = "peft"

    def __init__(self, shape, batch):
        self.shape, self.batch = shape, batch
        self._models: dict = {}

    def _model(self, method: str):
        if method not in self._models:
            import peft
            self._models[method] = peft.get_peft_model(make_model(self.shape), _config(method))
        return self._models[method]

    def build(self, key: str) -> Case:
        method, _, what = key.partition("_")
        if what == "train":
            return train_case(self._model(method), self.batch)
        if what == "infer":
            return inference_case(self._model(method), self.batch)
        if key == "lora_merged":
            import peft
            model = peft.get_peft_model(make_model(self.shape), _config("lora"))
            model.merge_adapter()  # merged in place, the adapter kept (as adapterkit's and adapters' merge)
            return inference_case(model, self.batch)
        if key == "add_lora":
            import peft
            model = peft.get_peft_model(make_model(self.shape), _config("lora"))

            def prepare():
                if "tmp" in model.peft_config:
                    model.delete_adapter("tmp")
            return Case(lambda: model.add_adapter("tmp", _config("lora")), prepare)
        if key == "merge_lora":
            import peft
            model = peft.get_peft_model(make_model(self.shape), _config("lora"))
            model.eval()

            def prepare():
                if any(getattr(m, "merged", False) for m in model.modules()):
                    model.unmerge_adapter()
            return Case(model.merge_adapter, prepare)
        raise KeyError(f"peft has no case {key!r}; cases: {', '.join(KEYS)}")
