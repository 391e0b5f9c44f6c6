"""`AutoAdapterModel`: an `AdapterModel` for any config or checkpoint whose architecture has an interface.

`<Arch>AdapterModel` classes are derived on demand from the architecture's base model class (what
`AutoModel` picks), so no per-architecture class is written by hand. A checkpoint of a transformers task
model (`BertForSequenceClassification`, ...) loads through that task class, and its head becomes the
flexible head "default", converted by the interface's `task_heads` table.
"""

from __future__ import annotations

import logging
import sys

import transformers
from transformers import AutoConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from ..errors import AdapterError
from ..interfaces import get_interface
from ..io import hub as hub_io
from .adapter_model import AdapterModel
from .conversion import rename_task_weights, task_head_config, task_head_for
from .io import load_head_weights
from .registry import build_head

logger = logging.getLogger(__name__)
_CLASSES: dict[type, type] = {}
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder",
               "trust_remote_code", "proxies")


def adapter_model_class(config) -> type:
    """`<Arch>AdapterModel` for a config (or config class): AdapterModel + the architecture's PreTrainedModel."""
    config_cls = config if isinstance(config, type) else type(config)
    try:
        base_cls = MODEL_MAPPING[config_cls]
    except KeyError:
        raise AdapterError(f"transformers has no base model (AutoModel) for {config_cls.__name__}") from None
    base_cls = base_cls[0] if isinstance(base_cls, (tuple, list)) else base_cls
    if base_cls not in _CLASSES:
        parent = base_cls.__mro__[1]
        if not (issubclass(parent, PreTrainedModel) and parent is not PreTrainedModel and parent.base_model_prefix):
            raise AdapterError(f"{base_cls.__name__} does not derive from a <Arch>PreTrainedModel with a "
                               "base_model_prefix; it cannot be wrapped as an AdapterModel")
        name = base_cls.__name__.removesuffix("Model") + "AdapterModel"
        cls = type(name, (AdapterModel, parent), {"_base_model_class": base_cls, "__module__": __name__,
                                                  "__qualname__": name})
        setattr(sys.modules[__name__], name, cls)  # importable by name, so pickling the class works
        _CLASSES[base_cls] = cls
    return _CLASSES[base_cls]


class AutoAdapterModel:
    """Factory like transformers' AutoModel; the result has the adapter API and flexible heads."""

    def __init__(self, *args, **kwargs):
        raise EnvironmentError("use AutoAdapterModel.from_pretrained(path) or AutoAdapterModel.from_config(config)")

    @classmethod
    def from_config(cls, config, interface=None, **kwargs) -> AdapterModel:
        """A freshly initialised AdapterModel (heads in `config.prediction_heads` are rebuilt)."""
        return adapter_model_class(config)._from_config(config, interface=interface, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, interface=None, **kwargs) -> AdapterModel:
        """Load a checkpoint: a saved AdapterModel, a bare base model, or a task model (its head converted)."""
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        try:
            config = kwargs.get("config") or AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        except OSError:  # transformers' "couldn't connect ... cached files": say which repo and how to fix it
            if hub_io.is_repo_id(pretrained_model_name_or_path) and hub_io.may_not_download(
                    hub.get("local_files_only", False)):
                raise hub_io.not_cached(pretrained_model_name_or_path, hub.get("revision"), hub.get("cache_dir"),
                                        hub.get("local_files_only", False)) from None
            raise
        model_cls = adapter_model_class(config)
        interface = interface or get_interface(config.model_type)
        architecture = (getattr(config, "architectures", None) or [None])[0]
        task = task_head_for(interface, architecture)
        if task is None:
            if architecture and architecture not in (model_cls.__name__, model_cls._base_model_class.__name__):
                logger.warning("%s is a %s checkpoint; adapterkit has no conversion for its head (known: %s), so "
                               "only the base model is loaded", pretrained_model_name_or_path, architecture,
                               ", ".join(interface.task_heads) or "none")
            return model_cls.from_pretrained(pretrained_model_name_or_path, *model_args, interface=interface,
                                             **kwargs)
        task_model = getattr(transformers, architecture).from_pretrained(pretrained_model_name_or_path,
                                                                         *model_args, **kwargs)
        return from_task_model(task_model, interface=interface, source=str(pretrained_model_name_or_path))


def from_task_model(task_model: PreTrainedModel, interface=None, head_name: str = "default",
                    source: str | None = None) -> AdapterModel:
    """An AdapterModel around a task model's base model, its head converted to flexible head `head_name`."""
    config = task_model.config
    interface = interface or get_interface(config.model_type)
    architecture = type(task_model).__name__
    task = task_head_for(interface, architecture)
    if task is None:
        raise AdapterError(f"no head conversion for {architecture}; known: {', '.join(interface.task_heads)}")
    base = task_model.base_model
    prefix = task_model.base_model_prefix + "."
    base_tensors = {id(t) for t in base.state_dict(keep_vars=True).values()}
    head_weights = {k: v for k, v in task_model.state_dict(keep_vars=True).items()
                    if not k.startswith(prefix) and id(v) not in base_tensors}
    head = build_head(head_name, task_head_config(task, config), config)
    weights = rename_task_weights(task, {k: v.detach() for k, v in head_weights.items()},
                                  source=source or architecture)
    model = adapter_model_class(config)(config, interface=interface, base_model=base)
    load_head_weights(head, weights, source=source or architecture, embeddings=model.tied_input_embeddings())
    model.add_prediction_head(head, set_active=True)
    return model
