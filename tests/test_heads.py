"""Flexible heads on AdapterModels: every head type's forward and loss, activation with adapters, API errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import BartConfig, ViTConfig
from transformers.modeling_outputs import (BaseModelOutputWithPoolingAndCrossAttentions, CausalLMOutput,
                                           ImageClassifierOutput, MaskedLMOutput, MultipleChoiceModelOutput,
                                           QuestionAnsweringModelOutput, Seq2SeqLMOutput, SequenceClassifierOutput,
                                           TokenClassifierOutput)

import adapterkit
from adapterkit import AdapterError, AdapterSetup, AutoAdapterModel, ModelInterface

from conftest import tiny_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return AutoAdapterModel.from_config(tiny_config("bert")).eval()


def base_hidden(model, batch):
    with AdapterSetup(None):
        return model.base_model(**batch)


def test_adapter_model_is_a_transformers_model_with_the_adapter_api(model):
    from transformers import BertModel, PreTrainedModel
    assert isinstance(model, PreTrainedModel) and isinstance(model, adapterkit.AdapterModelMixin)
    assert type(model).__name__ == "BertAdapterModel" and isinstance(model.bert, BertModel)
    assert model.adapter_state.base is model.bert
    state = model.adapter_state
    assert adapterkit.init(model) is model and model.adapter_state is state  # init is idempotent here too


def test_no_head_returns_base_outputs(model, batch):
    out = model(**batch)
    assert isinstance(out, BaseModelOutputWithPoolingAndCrossAttentions)
    assert torch.equal(out.last_hidden_state, model.bert(**batch).last_hidden_state)
    with pytest.raises(AdapterError, match="no prediction head is active"):
        model(**batch, labels=torch.zeros(3, dtype=torch.long))


def test_classification_head_logits_and_cross_entropy(model, batch):
    model.add_classification_head("cls", num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    labels = torch.tensor([0, 2, 1])
    out = model(**batch, labels=labels)
    assert isinstance(out, SequenceClassifierOutput) and out.logits.shape == (3, 3)
    h = model.bert(**batch).last_hidden_state[:, 0]
    head = model.heads.cls
    expected = head[4](torch.tanh(head[1](h)))
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels))
    assert model.get_labels() == ["a", "b", "c"]
    assert [n for n, _ in head.named_parameters()] == ["1.weight", "1.bias", "4.weight", "4.bias"]


def test_regression_and_multilabel_losses(model, batch):
    model.add_classification_head("reg", num_labels=1)
    target = torch.tensor([0.5, -1.0, 2.0])
    out = model(**batch, labels=target)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.view(-1), target))
    model.add_classification_head("ml", num_labels=4, multilabel=True, layers=1)
    assert model.active_head == "ml"
    multi = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    out = model(**batch, labels=multi)
    assert model.heads.ml.config["head_type"] == "multilabel_classification"
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, multi.float()))


def test_pooled_classification_uses_the_pooler(model, batch):
    model.add_classification_head("p", num_labels=2, layers=1, use_pooler=True)
    out = model(**batch)
    pooled = model.bert(**batch).pooler_output
    torch.testing.assert_close(out.logits, model.heads.p[1](pooled))


def test_tagging_loss_ignores_padding(model, batch):
    model.add_tagging_head("tag", num_labels=5)
    labels = torch.randint(0, 5, batch["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    out = model(**batch, labels=labels)
    assert isinstance(out, TokenClassifierOutput) and out.logits.shape == (3, 9, 5)
    kept = batch["attention_mask"].reshape(-1) == 1
    expected = F.cross_entropy(out.logits.reshape(-1, 5)[kept], labels.reshape(-1)[kept])
    torch.testing.assert_close(out.loss, expected)


def test_multiple_choice_head_runs_choices_flattened(model, batch):
    model.add_multiple_choice_head("mc", num_choices=3)
    ids = batch["input_ids"].view(1, 3, 9)
    mask = batch["attention_mask"].view(1, 3, 9)
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([2]))
    assert isinstance(out, MultipleChoiceModelOutput) and out.logits.shape == (1, 3)
    h = model.bert(**batch).last_hidden_state[:, 0]
    head = model.heads.mc
    scores = head[4](torch.tanh(head[1](h))).view(1, 3)
    torch.testing.assert_close(out.logits, scores)
    torch.testing.assert_close(out.loss, F.cross_entropy(scores, torch.tensor([2])))


def test_qa_head_start_end_logits_and_loss(model, batch):
    model.add_qa_head("qa")
    start, end = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 40])  # 40 is outside: ignored
    out = model(**batch, start_positions=start, end_positions=end)
    assert isinstance(out, QuestionAnsweringModelOutput) and out.start_logits.shape == (3, 9)
    clamped = end.clamp(0, 9)
    expected = (F.cross_entropy(out.start_logits, start, ignore_index=9)
                + F.cross_entropy(out.end_logits, clamped, ignore_index=9)) / 2
    torch.testing.assert_close(out.loss, expected)
    assert list(model.heads.qa.label_names) == ["start_positions", "end_positions"]
    assert torch.equal(end, torch.tensor([4, 5, 40])), "the caller's labels must not be modified"


def test_lm_heads_tie_the_decoder_and_shift_only_for_causal(model, batch):
    model.add_masked_lm_head("mlm")
    model.add_causal_lm_head("clm")
    labels = batch["input_ids"]
    for name, cls, shift in (("mlm", MaskedLMOutput, False), ("clm", CausalLMOutput, True)):
        out = model(**batch, head=name, labels=labels)
        assert isinstance(out, cls) and out.logits.shape == (3, 9, 99)
        assert model.heads[name][3].weight is model.bert.embeddings.word_embeddings.weight
        logits, target = (out.logits[:, :-1], labels[:, 1:]) if shift else (out.logits, labels)
        torch.testing.assert_close(out.loss, F.cross_entropy(logits.reshape(-1, 99), target.reshape(-1)))


def test_lm_head_inverts_an_active_invertible_adapter(model, batch):
    model.add_adapter("inv", config="seq_bn_inv")
    model.add_masked_lm_head("inv")
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.normal_(0, 0.2)
    model.set_active_adapters("inv")
    out = model(**batch).logits
    hidden = model.bert(**batch).last_hidden_state  # adapters active, so this includes the NICE forward
    head = model.heads.inv
    x = head[2](head[1](head[0](hidden)))
    x = model.adapterkit["inv"].shared["invertible"](x, rev=True)
    torch.testing.assert_close(out, head[3](x))


def test_head_named_like_an_adapter_activates_with_it(model, batch):
    model.add_adapter("a", config="lora")
    model.add_adapter("b", config="lora")
    model.add_classification_head("a", num_labels=2)
    model.add_tagging_head("b", num_labels=3)
    model.add_qa_head("other")
    assert model.active_head == "other"
    model.set_active_adapters("a")
    assert model.active_head == "a"
    model.train_adapter("b")
    assert model.active_head == "b" and model.training
    assert model(**batch).logits.shape == (3, 9, 3)
    with AdapterSetup("a"):
        assert model(**batch).logits.shape == (3, 2)
    model.set_active_adapters(["b", "a"])  # a Stack: the last adapter names the head
    assert model.active_head == "a"
    assert model(**batch, head="other").start_logits.shape == (3, 9)


def test_train_adapter_keeps_heads_trainable_and_base_frozen(model):
    model.add_adapter("a", config="lora")
    model.add_classification_head("a")
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("adapterkit.a.", "heads.a.")) for n in trainable)
    assert any(n.startswith("heads.") for n in trainable)


def test_head_api_errors_and_delete(model):
    model.add_classification_head("x")
    with pytest.raises(AdapterError, match="already exists"):
        model.add_classification_head("x")
    model.add_classification_head("x", num_labels=5, overwrite_ok=True)
    assert model.heads.x[4].out_features == 5 and model.config.prediction_heads["x"]["num_labels"] == 5
    with pytest.raises(AdapterError, match="does not exist"):
        model(input_ids=torch.ones(1, 3, dtype=torch.long), head="nope")
    with pytest.raises(AdapterError, match="invalid adapter name"):
        model.add_tagging_head("a.b")
    with pytest.raises(adapterkit.AdapterConfigError, match="unknown head_type"):
        model.add_prediction_head_from_config("y", {"head_type": "regression_tree"})
    with pytest.raises(adapterkit.AdapterConfigError, match="unknown key"):
        model.add_prediction_head_from_config("y", {"head_type": "tagging", "num_lables": 3})
    with pytest.raises(AdapterError, match="encoder-decoder"):
        model.add_seq2seq_lm_head("s2s")
    model.delete_head("x")
    assert "x" not in model.heads and model.active_head is None and "x" not in model.config.prediction_heads
    with pytest.raises(AdapterError, match="does not exist"):
        model.delete_head("x")


def test_return_dict_false_gives_a_tuple(model, batch):
    model.add_classification_head("c")
    labels = torch.tensor([0, 1, 1])
    loss, logits = model(**batch, labels=labels, return_dict=False)[:2]
    out = model(**batch, labels=labels)
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(loss, out.loss)


# -- other architectures: the head code is architecture-neutral -------------------------------------
VIT = ModelInterface(model_types=("vit",), embeddings="embeddings", layers="layers",
                     attention={"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj"},
                     intermediate=("mlp.fc1",), output=("mlp.fc2",), residual_sites={})
BART = ModelInterface(model_types=("bart",), embeddings="shared", layers="encoder.layers",
                      attention={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj"},
                      intermediate=("fc1",), output=("fc2",), residual_sites={})


def test_image_classification_head_on_a_vision_model():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=8, patch_size=4)
    model = AutoAdapterModel.from_config(config, interface=VIT).eval()
    model.add_adapter("img", config="lora")
    model.add_image_classification_head("img", num_labels=3, multilabel=True)
    model.train_adapter("img")
    pixels = torch.randn(2, 3, 8, 8)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = model(pixel_values=pixels, labels=labels)
    assert isinstance(out, ImageClassifierOutput) and out.logits.shape == (2, 3)
    cls = model.vit(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(out.logits, model.heads.img[1](cls))
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))


def test_seq2seq_lm_head_on_an_encoder_decoder_model():
    torch.manual_seed(0)
    config = BartConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=99,
                        max_position_embeddings=64)
    model = AutoAdapterModel.from_config(config, interface=BART).eval()
    model.add_adapter("s", config="lora")
    model.add_seq2seq_lm_head("s")
    ids, labels = torch.randint(3, 99, (2, 6)), torch.randint(3, 99, (2, 5))
    labels[1, -2:] = -100
    out = model(input_ids=ids, labels=labels)
    assert isinstance(out, Seq2SeqLMOutput) and out.logits.shape == (2, 5, 99)
    assert model.heads.s[0].weight is model.get_input_embeddings().weight
    decoder_inputs = torch.cat([torch.full((2, 1), config.decoder_start_token_id), labels[:, :-1]], 1)
    decoder_inputs[decoder_inputs == -100] = config.pad_token_id
    hidden = model.base_model(input_ids=ids, decoder_input_ids=decoder_inputs).last_hidden_state
    torch.testing.assert_close(out.logits, model.heads.s[0](hidden))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits.reshape(-1, 99), labels.reshape(-1)))
