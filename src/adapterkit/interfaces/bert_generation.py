"""BertGeneration (encoder / decoder of BERT2BERT models): BERT's layer layout, its LM head named `lm_head`."""

from dataclasses import replace

from .bert import BERT
from .registry import register_interface

BERT_GENERATION = register_interface(replace(BERT, model_types=("bert-generation",), lm_heads=("lm_head",),
                                             task_heads={}))
