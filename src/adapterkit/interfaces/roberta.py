"""RoBERTa: BERT's module layout (RobertaSelfOutput / RobertaOutput), its LM head named `lm_head`."""

from dataclasses import replace

from .bert import BERT
from .registry import register_interface

ROBERTA = register_interface(replace(BERT, model_types=("roberta",), lm_heads=("lm_head",)))
