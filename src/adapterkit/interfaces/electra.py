"""ELECTRA: BERT's layer layout. Its embeddings may be narrower than the layers (`embedding_size`), so an
invertible adapter is inverted right before the generator's LM projection, which works in that width."""

from dataclasses import replace

from .bert import BERT
from .registry import register_interface

ELECTRA = register_interface(replace(BERT, model_types=("electra",), lm_heads=("generator_lm_head",)))
