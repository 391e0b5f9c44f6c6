"""BERT: post-LN encoder; bottleneck adapters sit in BertSelfOutput / BertOutput before their LayerNorm.

As a decoder (`add_cross_attention`: BERT2BERT) its layers have a `crossattention` of the same classes; "?": absent
from encoder layers. The `adapters` package gives that cross-attention output the "mh_adapter" location too (the
same module class), so its checkpoints' mh_adapter means cross_adapter as well there (`cross_adapter_from`)."""

from .base import ModelInterface, ResidualSite, TaskHead
from .registry import register_interface

# Task heads of the transformers BERT models, as flexible heads (a "config.<attr>" value is read from the model
# config). One linear layer after dropout sits at index 1; LM heads are dense -> act -> LayerNorm -> decoder.
_LINEAR = {"layers": 1, "activation_function": None}
_LM = {"layers": 2, "activation_function": "config.hidden_act", "layer_norm": True, "bias": True}
_LM_WEIGHTS = {"cls.predictions.transform.dense": "0", "cls.predictions.transform.LayerNorm": "2",
               "cls.predictions.decoder": "3", "cls.predictions.bias": "3.bias"}
BERT_TASK_HEADS = {
    "BertForSequenceClassification": TaskHead("classification", {**_LINEAR, "use_pooler": True}, {"classifier": "1"}),
    "BertForMultipleChoice": TaskHead("multiple_choice", {**_LINEAR, "use_pooler": True}, {"classifier": "1"}),
    "BertForTokenClassification": TaskHead("tagging", _LINEAR, {"classifier": "1"}),
    "BertForQuestionAnswering": TaskHead("question_answering", _LINEAR, {"qa_outputs": "1"}),
    "BertForMaskedLM": TaskHead("masked_lm", _LM, _LM_WEIGHTS),
    "BertLMHeadModel": TaskHead("causal_lm", _LM, _LM_WEIGHTS),
}

BERT = register_interface(ModelInterface(
    model_types=("bert",),
    embeddings="embeddings",
    layers="encoder.layer",
    attention={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "o": "attention.output.dense"},
    intermediate=("intermediate.dense",),
    output=("output.dense",),
    residual_sites={"mh_adapter": ResidualSite("attention.output"), "output_adapter": ResidualSite("output"),
                    "cross_adapter": ResidualSite("crossattention.output")},
    self_attention="attention.self",
    cross_attention="crossattention.self?",
    cross_attention_projections={"q": "crossattention.self.query?", "k": "crossattention.self.key?",
                                 "v": "crossattention.self.value?", "o": "crossattention.output.dense?"},
    adapterhub={"cross_adapter_from": "mh_adapter"},
    lm_heads=("cls",),
    task_heads=BERT_TASK_HEADS,
))
