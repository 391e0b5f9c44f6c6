"""`train_adapter` freezes an LM's output embeddings unless `train_embeddings=True`, as the `adapters` package does
(its `freeze_embeddings`): an untied LM head (Llama) is pretrained, large, and not part of a saved adapter, so
training it would make the saved adapter reproduce something other than what was trained."""

from __future__ import annotations

import adapterkit

import archs


def _trainable_outside_adapters(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad and "adapterkit" not in n]


def test_untied_lm_head_is_frozen_unless_embeddings_train():
    from transformers import LlamaForCausalLM
    model = adapterkit.init(archs.model("llama", cls=LlamaForCausalLM, tie_word_embeddings=False))
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    model.add_adapter("a", config="lora")
    model.train_adapter("a")
    assert _trainable_outside_adapters(model) == []
    model.train_adapter("a", train_embeddings=True)
    assert set(_trainable_outside_adapters(model)) == {"model.embed_tokens.weight", "lm_head.weight"}


def test_a_classifier_head_still_trains():
    from transformers import BertForSequenceClassification
    model = adapterkit.init(archs.model("bert", cls=BertForSequenceClassification))
    model.add_adapter("a", config="lora")
    model.train_adapter("a")
    assert set(_trainable_outside_adapters(model)) == {"classifier.weight", "classifier.bias"}
