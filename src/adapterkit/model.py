"""The adapter API that `adapterkit.init(model)` installs on a transformers model.

`init` swaps the instance's class for a subclass that adds this mixin (the model's own code is untouched)
and hangs an `AdapterState` off it. Names follow adapter-transformers 3.1 / `adapters` 1.x.
"""

from __future__ import annotations


import torch.nn as nn

from . import forward_hooks, generation, io, registry, sharing
from .averaging import average_adapter
from .blocks import AdapterCompositionBlock, Stack, parse_composition
from .configs import AdapterConfig, resolve_config
from .errors import AdapterError
from .fusion.container import fusion_parameter_ids
from .fusion_api import FusionMixin, freeze_fusions
from .interfaces import ModelInterface
from .interfaces import get_interface
from .interfaces.missing import missing_interface
from .io import hub
from .naming import check_adapter_name
from .state import AdapterState
from .summary import format_summary, summary_rows

_STATE_ATTR = "_adapterkit_state"


class AdapterModelMixin(FusionMixin):
    """Methods added to a model by `adapterkit.init` (AdapterFusion's in fusion_api.py)."""

    # -- state -------------------------------------------------------------------------------------
    @property
    def adapter_state(self) -> AdapterState:
        return self.__dict__[_STATE_ATTR]

    @property
    def adapters_config(self) -> dict[str, AdapterConfig]:
        """name -> config of every adapter on the model (a copy)."""
        return dict(self.adapter_state.configs)

    def _require(self, name: str) -> AdapterConfig:
        return self.adapter_state.require(name)

    # -- adding and removing -----------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, config=None, overwrite_ok: bool = False, set_active: bool = False,
                    **overrides) -> None:
        """Add an adapter. `config`: a config object, a name ("lora", "pfeiffer", ...), a config string
        ("lora[r=4,alpha=16]"), a dict, or None for the default ("seq_bn"). `overrides` change config fields."""
        check_adapter_name(adapter_name)
        state = self.adapter_state
        if adapter_name in state.configs:
            if not overwrite_ok:
                raise AdapterError(
                    f"an adapter named {adapter_name!r} already exists; pick another name, delete it first, "
                    "or pass overwrite_ok=True"
                )
            self.delete_adapter(adapter_name)
        config = resolve_config(config, **overrides)
        state.configs[adapter_name] = config
        try:
            registry.build(state, adapter_name, config)
        except Exception:
            state.configs.pop(adapter_name, None)
            if adapter_name in state.container:
                state.drop_adapter_modules(adapter_name)
            raise
        if adapter_name not in state.container:  # (every location it asks for was skipped in every layer)
            state.configs.pop(adapter_name, None)
            raise AdapterError(f"adding {adapter_name!r} ({type(config).__name__}) created no module: none of the "
                               f"locations it asks for exists in a layer of {type(self).__name__}")
        # new modules start in train mode; follow the model's mode (dropout must be off in an eval model)
        state.container[adapter_name].train(self.training)
        state.invalidate()
        state.sync_sites()
        if set_active:
            self.set_active_adapters(adapter_name)

    def has_adapters(self) -> bool:
        return bool(self.adapter_state.configs)

    def get_adapter(self, adapter_name: str) -> dict:
        """The modules of an adapter: `{layer_id: {location: module}}`, model-level ones (prefix MLPs, invertible
        adapters, Compacter's shared rule) under layer id -1 (as the `adapters` package)."""
        self._require(adapter_name)
        out: dict = {}
        for (layer_id, location), module in self.adapter_state.layer_modules(adapter_name):
            out.setdefault(layer_id, {})[location] = module
        shared = self.adapterkit[adapter_name].shared
        if len(shared):
            out[-1] = dict(shared.items())
        return out

    def adapter_to(self, adapter_name: str, device=None, dtype=None) -> None:
        """Move one adapter's modules to `device` and / or cast them to `dtype`. An adapter in another dtype than
        the model (float32 on a bfloat16 model, say) computes in its own and returns the model's (methods/dtypes.py)."""
        self._require(adapter_name)
        self.adapterkit[adapter_name].to(device=device, dtype=dtype)

    def average_adapter(self, adapter_name: str, adapter_list, weights=None, combine_strategy: str = "linear",
                        normalize_weights: bool = True, overwrite_ok: bool = False, set_active: bool = False,
                        svd_rank: int | None = None, *, density: float | None = None,
                        majority_sign_method: str = "total", svd_clamp: float | None = None,
                        svd_full_matrices: bool = True, svd_driver: str | None = None) -> None:
        """Add `adapter_name` as a weighted average of adapters of one config (`adapter_list`: names, or a dict
        name -> weight; default weights equal, normalised to sum 1). `combine_strategy`: "linear" (every
        parameter), or for LoRA "lora_linear_only_negate_b" / "lora_delta_w_svd" (with `svd_rank`), and peft's
        "cat", "ties", "dare_linear", "dare_ties", "magnitude_prune" (with `density`, `majority_sign_method`) and
        "svd", "<those>_svd" (with `svd_rank`, `svd_clamp`, `svd_full_matrices`, `svd_driver`); see averaging.py
        and methods/lora/task_arithmetic.py."""
        average_adapter(self, adapter_name, adapter_list, weights, combine_strategy, normalize_weights, overwrite_ok,
                        set_active, svd_rank, density=density, majority_sign_method=majority_sign_method,
                        svd_clamp=svd_clamp, svd_full_matrices=svd_full_matrices, svd_driver=svd_driver)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter and its weights (resetting it first if merged); it leaves the active setup."""
        self._require(adapter_name)
        state = self.adapter_state
        registry.check_unbuild(state, adapter_name)
        if adapter_name in state.merged:
            self.reset_adapter(adapter_name)
        registry.unbuild(state, adapter_name)  # base rows a base-changing init wrote (PiSSA), bit for bit
        if state.active is not None and adapter_name in state.active.flatten():
            # a Stack of names loses the name; any other block without it would mean something else: deactivate
            remaining = [n for n in state.active.flatten() if n != adapter_name]
            plain = isinstance(state.active, Stack) and all(isinstance(c, str) for c in state.active.children)
            state.active = parse_composition(remaining) if remaining and plain else None
        del state.configs[adapter_name]
        sharing.forget(state, adapter_name)
        state.drop_adapter_modules(adapter_name)

    def share_parameters(self, adapter_names, name: str | None = None,
                         reference_adapter_name: str | None = None) -> None:
        """Tie the shareable parameters of several adapters of one method (MTL-LoRA: `lora_A`, `lora_B`) to those
        of `reference_adapter_name` (default: the first). `adapter_names`: a MultiTask block, a list or "a,b";
        `name`: the group's (default: the names joined by commas). As the `adapters` package (sharing.py)."""
        sharing.share(self.adapter_state, adapter_names, name, reference_adapter_name)

    def unshare_parameters(self, adapter_names, name: str | None = None) -> None:
        """Undo `share_parameters`: each adapter gets its own copy of the (current) shared values."""
        sharing.unshare(self.adapter_state, adapter_names, name)

    # -- activation and training -------------------------------------------------------------------
    def set_active_adapters(self, adapter_setup, skip_layers=None) -> None:
        """Activate a name, a list of names (a Stack) or a composition block; None deactivates all.
        `skip_layers`: AdapterDrop, layer indices whose adapters every forward leaves out until the next call
        (state/skip.py)."""
        setup = parse_composition(adapter_setup)
        skip = self.adapter_state.check_skip_layers(skip_layers)
        self.adapter_state.check_setup(setup)
        self.adapter_state.skip_layers = skip
        self.adapter_state.active = setup
        self.adapter_state.invalidate()
        # built now, not in the first forward: torch.compile guards on the plan cache, and a plan first built inside
        # a compiled forward changes that cache and makes the next call compile the whole model again
        self.adapter_state.plan_for(setup)

    @property
    def active_adapters(self) -> AdapterCompositionBlock | None:
        """The active setup (a composition block, e.g. `Stack('a')`), or None."""
        return self.adapter_state.active

    @active_adapters.setter
    def active_adapters(self, adapter_setup) -> None:
        self.set_active_adapters(adapter_setup)

    def freeze_model(self, freeze: bool = True) -> None:
        """Freeze (or unfreeze) the base model's own weights; adapters and task heads are left as they are."""
        state = self.adapter_state
        adapter_ids = {id(p) for p in state.container.parameters()} | fusion_parameter_ids(self)
        for p in state.base.parameters():
            if id(p) not in adapter_ids:
                p.requires_grad_(not freeze)
        state.model_frozen = freeze

    def train_adapter(self, adapter_setup, train_embeddings: bool = False) -> None:
        """Freeze the base model, make exactly the named adapters trainable, activate them, train mode.

        Parameters outside the base model (a task head such as a classifier) stay trainable, as in the `adapters` package;
        so does it, the output embeddings (an LM head, untied as in Llama) train only with `train_embeddings`.
        """
        setup = parse_composition(adapter_setup)
        if setup is None:
            raise AdapterError("train_adapter needs at least one adapter name")
        state = self.adapter_state
        state.check_setup(setup)
        names = setup.flatten()
        merged = [n for n in names if n in state.merged]
        if merged:
            raise AdapterError(
                f"adapter(s) {', '.join(map(repr, merged))} are merged into the weights; "
                "call reset_adapter(...) before training them"
            )
        self.freeze_model(True)
        if train_embeddings:
            self.get_input_embeddings().weight.requires_grad_(True)
        output = self.get_output_embeddings() if hasattr(self, "get_output_embeddings") else None
        for module in output if isinstance(output, list) else [output] if output is not None else []:
            module.requires_grad_(train_embeddings)
        for name, modules in state.container.items():
            modules.requires_grad_(name in names)
        for name in names:  # again: a frozen adapter may share tensors with a trained one (share_parameters)
            if name in state.container:
                state.container[name].requires_grad_(True)
        freeze_fusions(self)
        self.set_active_adapters(setup)
        self.train()

    # -- merging -----------------------------------------------------------------------------------
    def merge_adapter(self, adapter_name: str) -> None:
        """Fold a LoRA / (IA)^3 adapter into the weights (zero inference overhead); undo with reset_adapter.

        The base rows it overwrites are kept (in their dtype, on their device) until reset. Merging a merged
        adapter again re-merges its current tensors from the base weights (left unmerged if that fails)."""
        config = self._require(adapter_name)
        state = self.adapter_state
        try:
            registry.merge(state, adapter_name, config)
        finally:
            state.invalidate()
            state.sync_sites()

    def reset_adapter(self, adapter_name: str) -> None:
        """Undo `merge_adapter`: restore the base weights bit for bit (from the rows kept at merge) and drop the
        copy; the adapter runs unmerged again. No-op if not merged."""
        config = self._require(adapter_name)
        state = self.adapter_state
        if adapter_name not in state.merged:
            return
        registry.reset(state, adapter_name, config)
        state.invalidate()
        state.sync_sites()

    def eject_prefix_tuning(self, adapter_name: str) -> None:
        """Turn a prefix-tuning adapter's MLP into the flat prefixes it computes: same outputs, fewer parameters
        (for inference or export)."""
        self._require(adapter_name)
        registry.api_function("eject_prefix_tuning")(self.adapter_state, adapter_name)

    def convert_to_plain_lora(self, adapter_name: str) -> None:
        """Turn a LoRA adapter whose init changed the base weights (init_weights "pissa", "pissa_niter_<N>",
        "olora") into the equal plain LoRA of rank 2r on the original base weights, restored bit for bit (peft's
        `path_initial_model_for_weight_conversion`, in place): it then saves in any format and loads on an
        unmodified model. Outputs stay equal up to float rounding."""
        self._require(adapter_name)
        registry.api_function("convert_to_plain_lora")(self.adapter_state, adapter_name)

    # -- saving and loading (io/ does the work) ----------------------------------------------------
    # `with_head` is part of the API everywhere; a plain model has no heads, so it changes nothing here. AdapterModel
    # (heads/adapter_model.py) overrides save_adapter / load_adapter to save and load the head named like the adapter.
    def save_adapter(self, save_directory, adapter_name: str, with_head: bool = True, format: str = "adapterkit",
                     safetensors: bool = True) -> None:
        """Save one adapter (and its head, if any) to a directory, atomically.

        `format`: "adapterkit" (adapter_config.json + adapter.safetensors), "adapterhub" (loadable by the
        `adapters` package; `safetensors=False` writes pytorch_adapter.bin) or "peft" (LoRA and (IA)^3).
        """
        io.save_adapter(self, save_directory, adapter_name, format=format, safetensors=safetensors)

    def load_adapter(self, path, load_as: str | None = None, set_active: bool = False, format: str | None = None,
                     with_head: bool = True, overwrite_ok: bool = False, **hub_options) -> str:
        """Load an adapter directory (any of the three formats, detected unless `format` is given); returns its
        name. Everything is validated first: on any error the model is unchanged.

        `path` may be a Hub repo id ("org/name"), fetched (adapter files only) through huggingface_hub: its cache
        and HF_HUB_OFFLINE apply; `hub_options`: revision, cache_dir, token, local_files_only, subfolder."""
        local = hub.resolve_path(path, **hub_options)
        return io.load_adapter(self, local, load_as=load_as, set_active=set_active, format=format,
                               overwrite_ok=overwrite_ok, folder_name=hub.folder_name(path, hub_options.get("subfolder")))

    def prepare_for_hotswap(self, adapter_name: str, max_rank: int | None = None) -> None:
        """Before torch.compile: pad LoRA ranks to `max_rank` (zeros, same outputs) and hold alpha / r in tensors,
        so that `hotswap_adapter` with another rank (<= max_rank) or alpha never recompiles (hotswap.py)."""
        from .hotswap import prepare_for_hotswap
        prepare_for_hotswap(self, adapter_name, max_rank)

    def hotswap_adapter(self, adapter_name: str, path_or_state, config=None, format: str | None = None,
                        **hub_options) -> None:
        """Replace an adapter's weights in place (`copy_`: a compiled graph stays valid) with those of a saved
        adapter (path or Hub id, any format) or a state dict (with its `config`); same kind of adapter, validated
        before anything is written (hotswap.py)."""
        from .hotswap import hotswap_adapter
        hotswap_adapter(self, adapter_name, path_or_state, config=config, format=format, **hub_options)

    def save_all_adapters(self, save_directory, with_head: bool = True, format: str = "adapterkit") -> list[str]:
        """Save every adapter to `save_directory/<name>` (each through `self.save_adapter`); returns the names."""
        return io.save_all_adapters(self, save_directory, format=format, with_head=with_head)

    def _validate_model_kwargs(self, model_kwargs: dict) -> None:
        """generate() checks its extra arguments against the model's forward: those the adapter hooks take
        (`task_ids`, ...: forward_hooks.py) are the model's too, and reach every step's forward."""
        for key in forward_hooks.FORWARD_ARGUMENTS:
            model_kwargs.pop(key, None)
        return super()._validate_model_kwargs(model_kwargs)

    def generate(self, *args, **kwargs):
        """transformers' generate(), which also takes `adapter_names=[...]` (one setup or None / "__base__" per
        input row) and per-row `task_ids`: each row generates with its own adapter (generation.py)."""
        with generation.per_row_arguments(self.adapter_state, args, kwargs):
            return super().generate(*args, **kwargs)

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids=None, **model_kwargs):
        """Beams and samples: transformers repeats the tensor arguments, the per-row lists are repeated alike."""
        generation.expand(model_kwargs, expand_size)
        return super()._expand_inputs_for_generation(expand_size=expand_size, is_encoder_decoder=is_encoder_decoder,
                                                     input_ids=input_ids, **model_kwargs)

    def save_adapter_setup(self, save_directory, adapter_setup, head_setup=None, format: str = "adapterkit",
                           safetensors: bool = True) -> None:
        """Save a whole composition as the `adapters` package lays it out: `adapter_setup.json` plus one folder per
        adapter, fusion and head (setup_io.py); `format="adapterhub"` writes the adapters in its file format."""
        from .setup_io import save_adapter_setup
        save_adapter_setup(self, save_directory, adapter_setup, head_setup, format=format, safetensors=safetensors)

    def load_adapter_setup(self, adapter_setup_name_or_path, set_active: bool = False, **hub_options):
        """Load a folder (or Hub repo) saved by `save_adapter_setup`, ours or the `adapters` package's; returns
        (adapter setup, head setup). On any error the model is unchanged."""
        from .setup_io import load_adapter_setup
        return load_adapter_setup(self, adapter_setup_name_or_path, set_active=set_active, **hub_options)

    def push_adapter_to_hub(self, repo_id: str, adapter_name: str, **options):
        """Upload an adapter (as `save_adapter` writes it, head included) plus a model card (README.md: config,
        base model, `metrics` if given, usage) to the Hub through huggingface_hub; returns its CommitInfo.

        Options (hub_push.push_adapter_to_hub): datasets_tag, local_path (stage there, else a temp folder),
        commit_message, private, token, overwrite_adapter_card, create_pr, revision, commit_description,
        adapter_card_kwargs (tags, language, license, description), metrics, format, endpoint."""
        from .hub_push import push_adapter_to_hub
        return push_adapter_to_hub(self, repo_id, adapter_name, **options)

    # -- reporting ---------------------------------------------------------------------------------
    def adapter_summary(self, as_dict: bool = False):
        """The release notes' table: name, architecture, #param, %param (of the base model), active, train."""
        rows = summary_rows(self.adapter_state)
        return rows if as_dict else format_summary(rows)


_CLASS_CACHE: dict[type, type] = {}


def _with_mixin(cls: type) -> type:
    if cls not in _CLASS_CACHE:
        _CLASS_CACHE[cls] = type(cls.__name__, (AdapterModelMixin, cls), {"__module__": cls.__module__,
                                                                           "__qualname__": cls.__qualname__})
    return _CLASS_CACHE[cls]


def init(model: nn.Module, interface: ModelInterface | None = None) -> nn.Module:
    """Give `model` the adapter API in place (and return it). Idempotent.

    `interface` describes an architecture adapterkit does not ship; by default it is looked up by
    `model.config.model_type`.
    """
    if _STATE_ATTR in model.__dict__:
        return model
    if interface is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type is None:
            raise AdapterError(
                f"{type(model).__name__} has no config.model_type; pass init(model, interface=ModelInterface(...))"
            )
        try:
            interface = get_interface(model_type).for_model(model)
        except AdapterError:  # none registered (or none composed): infer one (logged as source to copy)
            from .interfaces.infer import infer_interface
            try:
                interface = infer_interface(model)
            except AdapterError as e:  # none inferred: module-targeted adapters only (interfaces/missing.py)
                interface = missing_interface(model_type, str(e))
    state = AdapterState(model, interface)
    if not isinstance(model, AdapterModelMixin):  # AdapterModel classes carry the mixin already
        model.__class__ = _with_mixin(type(model))
    model.__dict__[_STATE_ATTR] = state
    forward_hooks.install(model, state)
    return model
