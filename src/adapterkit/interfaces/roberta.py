"""RoBERTa: BERT's module layout (RobertaSelfOutput / RobertaOutput), its LM head named `lm_head`."""

from dataclasses import replace

from .base import TaskHead
from .bert import BERT
from .registry import register_interface

_LINEAR = {"layers": 1, "activation_function": None}
# RobertaLMHead: dense -> gelu (fixed, not config.hidden_act) -> layer_norm -> decoder.
_LM = {"layers": 2, "activation_function": "gelu", "layer_norm": True, "bias": True}
_LM_WEIGHTS = {"lm_head.dense": "0", "lm_head.layer_norm": "2", "lm_head.decoder": "3", "lm_head.bias": "3.bias"}
ROBERTA_TASK_HEADS = {
    # RobertaClassificationHead: first token -> dropout -> dense -> tanh -> dropout -> out_proj (no pooler).
    "RobertaForSequenceClassification": TaskHead(
        "classification", {"layers": 2, "activation_function": "tanh", "use_pooler": False},
        {"classifier.dense": "1", "classifier.out_proj": "4"}),
    "RobertaForMultipleChoice": TaskHead("multiple_choice", {**_LINEAR, "use_pooler": True}, {"classifier": "1"}),
    "RobertaForTokenClassification": TaskHead("tagging", _LINEAR, {"classifier": "1"}),
    "RobertaForQuestionAnswering": TaskHead("question_answering", _LINEAR, {"qa_outputs": "1"}),
    "RobertaForMaskedLM": TaskHead("masked_lm", _LM, _LM_WEIGHTS),
    "RobertaForCausalLM": TaskHead("causal_lm", _LM, _LM_WEIGHTS),
}

ROBERTA = register_interface(replace(BERT, model_types=("roberta",), lm_heads=("lm_head",),
                                     task_heads=ROBERTA_TASK_HEADS))
