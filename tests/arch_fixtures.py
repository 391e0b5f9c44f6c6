"""Loading of the `adapters` package's per-architecture fixtures (tools/make_arch_fixtures.py's layout, shared by
adapters_ref_archs/ and adapters_ref_newarchs/): the tiny base through transformers 5's `from_pretrained` (which
renames 4.x weights), a case's weights through `io.adapterhub` with the names each interface declares."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import transformers
from safetensors.torch import load_file

import adapterkit
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub
from adapterkit.methods.prefix_tuning.adapterhub import with_shifted_prefix


@functools.lru_cache(maxsize=None)
def _loaded(directory: Path, model_class: str, attn: str, kwargs: str):
    model = getattr(transformers, model_class).from_pretrained(directory, attn_implementation=attn,
                                                               **json.loads(kwargs))
    return model.eval()


class ArchFixtures:
    """One fixture directory below tests/fixtures/: its manifest, bases, inputs and cases."""

    def __init__(self, name: str):
        self.dir = Path(__file__).parent / "fixtures" / name
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        self.archs = sorted(self.manifest["archs"])

    def model_class(self, arch: str):
        return getattr(transformers, self.manifest["archs"][arch]["model_class"])

    def attns(self, arch: str) -> list[str]:
        """eager, and sdpa where transformers has it (not DeBERTa)."""
        return ["eager", "sdpa"] if self.model_class(arch)._supports_sdpa else ["eager"]

    def load_base(self, arch: str, attn: str = "eager"):
        entry = self.manifest["archs"][arch]
        return copy.deepcopy(_loaded(self.dir / arch / "base", entry["model_class"], attn,
                                     json.dumps(entry["model_kwargs"], sort_keys=True)))

    def inputs(self, arch: str) -> dict:
        return load_file(self.dir / arch / "inputs.safetensors")

    def expected(self, arch: str, case: str = "base", which: str = "expected"):
        return load_file(self.dir / arch / case / f"{which}.safetensors")["last_hidden_state"]

    def config(self, arch: str, case: str):
        return config_from_adapterhub(json.loads((self.dir / arch / case / "adapter_config.json").read_text()))

    def weights(self, arch: str, case: str) -> dict:
        return load_file(self.dir / arch / case / "adapter.safetensors")

    def load_case(self, arch: str, case: str, attn: str, interface=None):
        """Our model with the fixture's adapter loaded and active, its config, inputs and the reference output (None
        where the package's forward fails)."""
        config = self.config(arch, case)
        model = adapterkit.init(self.load_base(arch, attn), interface=interface)
        if model.adapter_state.interface.position_bias:  # as AdapterHub loading does (T5 prefix tuning)
            config = with_shifted_prefix(config)
        model.add_adapter(case, config=config)
        state = model.adapter_state
        weights = state_dict_from_adapterhub(self.weights(arch, case), case, state.interface, config, state=state)
        ours = model.adapterkit[case].state_dict()
        assert set(weights) == set(ours), set(weights) ^ set(ours)
        model.adapterkit[case].load_state_dict(weights)
        model.set_active_adapters(case)
        found = (self.dir / arch / case / "expected.safetensors").exists()
        return model, config, self.inputs(arch), self.expected(arch, case) if found else None

    def hub_dir(self, tmp_path: Path, arch: str, case: str) -> Path:
        """The case as the package's `save_adapter` lays it out: its config under "config", the weights beside."""
        hub = tmp_path / f"hub-{arch}-{case}"
        hub.mkdir()
        config = self.load_base(arch).config
        (hub / "adapter_config.json").write_text(json.dumps({
            "config": json.loads((self.dir / arch / case / "adapter_config.json").read_text()), "name": case,
            "model_type": config.model_type, "hidden_size": getattr(config, "d_model", None) or config.hidden_size,
            "version": "adapters.1.3.0"}))
        (hub / "adapter.safetensors").write_bytes((self.dir / arch / case / "adapter.safetensors").read_bytes())
        return hub
