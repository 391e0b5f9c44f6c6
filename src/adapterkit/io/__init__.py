"""Checkpoint formats: AdapterHub (adapter-transformers / `adapters`) conversion today; ours and PEFT next."""

from .adapterhub import config_from_adapterhub, fusion_state_dict_from_adapterhub, state_dict_from_adapterhub

__all__ = ["config_from_adapterhub", "fusion_state_dict_from_adapterhub", "state_dict_from_adapterhub"]
