"""Hub repos ("org/name") load through huggingface_hub, offline, from a cache the test builds in the real layout
(tests/hub_cache.py, with huggingface_hub's own cache functions). Nothing here can reach a network: offline mode
is on for every test (huggingface_hub then refuses every request)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import torch
from huggingface_hub import constants

import adapterkit
from adapterkit import AdapterError

from conftest import tiny_config, tiny_model
from hub_cache import cache_repo
from test_reference_adapters import FIXTURES, load_base

HUB_FIXTURES = Path(__file__).parent / "fixtures" / "adapterhub"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _out(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def _randomised(config="lora[r=4]", seed=1):
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config=config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    model.set_active_adapters("a")
    return model


@pytest.mark.parametrize("format", ["adapterkit", "peft", "adapterhub"])
def test_repo_of_each_layout_loads_offline(tmp_path, batch, format):
    model = _randomised()
    expected = _out(model, batch)
    model.save_adapter(tmp_path / "saved", "a", format=format)
    cache = tmp_path / "cache"
    cache_repo(cache, "org/tiny-lora", tmp_path / "saved")
    fresh = adapterkit.init(tiny_model())
    # A PEFT checkpoint stores no name (peft names it after its folder): from a repo it is the repo's name.
    assert fresh.load_adapter("org/tiny-lora", set_active=True, cache_dir=cache) == (
        "tiny-lora" if format == "peft" else "a")
    torch.testing.assert_close(_out(fresh, batch), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", ["bin", "safetensors"])
def test_adapters_package_repo_loads_offline(tmp_path, variant):
    """A repo holding an adapter (and head) that the `adapters` package saved (AdapterHub layout) gives its
    outputs (tests/fixtures/adapterhub, made with adapters 1.3.0)."""
    from safetensors.torch import load_file
    case = HUB_FIXTURES / "bert" / "seq_bn_head"
    cache_repo(tmp_path, "AdapterHub/bert-tiny-seq-bn", case / variant)
    model = adapterkit.init(load_base("bert"))
    name = model.load_adapter("AdapterHub/bert-tiny-seq-bn", set_active=True, cache_dir=tmp_path)
    inputs = load_file(FIXTURES / "bert" / "inputs.safetensors")
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    assert name == json.loads((case / variant / "adapter_config.json").read_text())["name"]
    torch.testing.assert_close(out, load_file(case / "expected.safetensors")["last_hidden_state"], atol=1e-5, rtol=0)


def test_only_adapter_files_are_asked_for(tmp_path, batch, monkeypatch):
    """The repo also lists a 10 MB base model and a notebook that were never downloaded: the load does not need
    them (offline, a read of the whole repo would fail as incomplete), and it asks huggingface_hub for adapter
    files only."""
    model = _randomised()
    model.save_adapter(tmp_path / "saved", "a")
    extra = {"model.safetensors": b"\0" * 10_000_000, "train.ipynb": b"{}", "sub/adapter_config.json": b"{}"}
    cache_repo(tmp_path / "cache", "org/mixed", tmp_path / "saved", listed_only=extra)
    with pytest.raises(huggingface_hub.errors.IncompleteSnapshotError):
        huggingface_hub.snapshot_download("org/mixed", cache_dir=tmp_path / "cache")
    asked = []
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: asked.append(k) or real(*a, **k))
    fresh = adapterkit.init(tiny_model())
    fresh.load_adapter("org/mixed", set_active=True, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(_out(fresh, batch), _out(model, batch), atol=1e-6, rtol=0)
    (call,) = asked
    assert "model.safetensors" not in call["allow_patterns"] and "adapter_config.json" in call["allow_patterns"]
    assert not any("*" in p for p in call["allow_patterns"])  # the root only: sub/ is another adapter


def test_missing_repo_offline_is_a_clear_error(tmp_path):
    model = adapterkit.init(tiny_model())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterError) as err:
        model.load_adapter("org/not-cached", cache_dir=tmp_path)
    message = str(err.value)
    assert "'org/not-cached'" in message and "not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=0" in message and str(tmp_path) in message
    assert not model.adapter_state.configs
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_local_files_only_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(AdapterError, match="local_files_only=True"):
        adapterkit.init(tiny_model()).load_adapter("org/not-cached", cache_dir=tmp_path, local_files_only=True)


def test_revision_and_subfolder(tmp_path, batch):
    model = _randomised()
    model.save_adapter(tmp_path / "saved" / "adapters" / "a", "a")
    cache_repo(tmp_path / "cache", "org/nested", tmp_path / "saved", revision="v1")
    fresh = adapterkit.init(tiny_model())
    fresh.load_adapter("org/nested", subfolder="adapters/a", revision="v1", set_active=True,
                       cache_dir=tmp_path / "cache")
    torch.testing.assert_close(_out(fresh, batch), _out(model, batch), atol=1e-6, rtol=0)
    with pytest.raises(AdapterError, match="not in the Hugging Face cache"):  # main was never cached
        fresh.load_adapter("org/nested", subfolder="adapters/a", cache_dir=tmp_path / "cache", load_as="b")


@pytest.mark.parametrize("subfolder", ["../x", "/etc", "a/../../b", "."])
def test_subfolder_never_leaves_the_repo(tmp_path, subfolder):
    with pytest.raises(AdapterError, match="subfolder"):
        adapterkit.init(tiny_model()).load_adapter("org/x", subfolder=subfolder, cache_dir=tmp_path)


def test_unknown_option_is_named(tmp_path):
    with pytest.raises(AdapterError, match="use_safetensors.*revision"):
        adapterkit.init(tiny_model()).load_adapter("org/x", use_safetensors=True)


def test_local_directory_wins_and_bad_path_is_not_a_repo(tmp_path, monkeypatch, batch):
    model = _randomised()
    model.save_adapter(tmp_path / "org" / "name", "a")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("asked the Hub"))
    fresh = adapterkit.init(tiny_model())
    fresh.load_adapter("org/name", set_active=True)  # the local folder, not the repo
    torch.testing.assert_close(_out(fresh, batch), _out(model, batch), atol=1e-6, rtol=0)
    with pytest.raises(AdapterError, match="no such adapter directory"):
        fresh.load_adapter("../no/such/dir")


def test_adapter_model_fetches_the_head_too(tmp_path, batch):
    torch.manual_seed(0)
    model = adapterkit.AutoAdapterModel.from_config(tiny_config())
    model.add_adapter("sst", config="pfeiffer")
    model.add_classification_head("sst", num_labels=3)
    model.eval()
    with torch.no_grad():
        for p in model.adapterkit["sst"].parameters():
            p.add_(0.1)
    model.set_active_adapters("sst")
    model.save_adapter(tmp_path / "saved", "sst")
    cache_repo(tmp_path / "cache", "org/sst", tmp_path / "saved")
    other = adapterkit.AutoAdapterModel.from_config(tiny_config())
    other.load_state_dict(model.state_dict(), strict=False)
    other.eval()
    assert other.load_adapter("org/sst", set_active=True, cache_dir=tmp_path / "cache") == "sst"
    assert other.active_head == "sst"
    with torch.no_grad():
        torch.testing.assert_close(other(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_auto_adapter_model_from_repo_offline(tmp_path, batch):
    base = tiny_model()
    base.save_pretrained(tmp_path / "base")
    cache_repo(tmp_path / "cache", "org/tiny-bert", tmp_path / "base")
    model = adapterkit.AutoAdapterModel.from_pretrained("org/tiny-bert", cache_dir=tmp_path / "cache").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).last_hidden_state, base(**batch).last_hidden_state, atol=0, rtol=0)
    with pytest.raises(AdapterError) as err:
        adapterkit.AutoAdapterModel.from_pretrained("org/not-cached", cache_dir=tmp_path / "cache")
    assert "'org/not-cached'" in str(err.value) and "not in the Hugging Face cache" in str(err.value)


# -- push_adapter_to_hub: staged locally; the upload calls are captured (no Hub, no local server) ------------------
def _captured_upload(monkeypatch):
    """Replace HfApi.create_repo / upload_folder with recorders that keep the files the upload would send."""
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = dict(repo_id=repo_id, endpoint=self.endpoint, **kwargs)
        return huggingface_hub.RepoUrl(f"{self.endpoint}/{repo_id}", endpoint=self.endpoint)

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, **kwargs):
        from huggingface_hub.utils import filter_repo_objects
        names = [p.name for p in Path(folder_path).iterdir() if p.is_file()]
        sent = list(filter_repo_objects(names, allow_patterns=allow_patterns))
        calls["upload_folder"] = dict(repo_id=repo_id, allow_patterns=allow_patterns, **kwargs)
        calls["files"] = {name: (Path(folder_path) / name).read_bytes() for name in sent}
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def _pushed_model(tmp_path):
    """An AdapterModel loaded from a (cached) base repo, so its card can name the base model."""
    tiny_model().save_pretrained(tmp_path / "base")
    cache_repo(tmp_path / "cache", "org/tiny-bert", tmp_path / "base")
    model = adapterkit.AutoAdapterModel.from_pretrained("org/tiny-bert", cache_dir=tmp_path / "cache").eval()
    model.add_adapter("sst", config="lora[r=4]")
    model.add_classification_head("sst", num_labels=2)
    with torch.no_grad():
        for p in model.adapterkit["sst"].parameters():
            p.add_(0.05)
    model.set_active_adapters("sst")
    return model


def test_push_stages_the_save_and_a_card_then_round_trips(tmp_path, monkeypatch, batch):
    calls = _captured_upload(monkeypatch)
    model = _pushed_model(tmp_path)
    metrics = {"eval_accuracy": 0.8125, "train_loss": 0.4321, "epoch": 3}
    out = model.push_adapter_to_hub("me/sst-lora", "sst", datasets_tag="glue", metrics=metrics,
                                    endpoint="http://127.0.0.1:9", private=True)
    assert out == "commit-info"
    assert calls["create_repo"]["repo_id"] == "me/sst-lora" and calls["create_repo"]["private"] is True
    assert calls["create_repo"]["endpoint"] == "http://127.0.0.1:9"
    model.save_adapter(tmp_path / "plain", "sst")
    expected_files = {p.name for p in (tmp_path / "plain").iterdir()} | {"README.md"}
    assert set(calls["files"]) == expected_files == set(calls["upload_folder"]["allow_patterns"])
    for name in expected_files - {"README.md"}:  # the same files save_adapter writes (safetensors' header order
        sent, saved = calls["files"][name], (tmp_path / "plain" / name).read_bytes()  # of metadata varies: decode)
        if name.endswith(".json"):  # the weights' sha256 is of the file's bytes: checked against the sent file
            sent_j, saved_j = json.loads(sent), json.loads(saved)
            digest = sent_j.get("weights", {}).pop("sha256", None)
            saved_j.get("weights", {}).pop("sha256", None)
            assert sent_j == saved_j, name
            if digest is not None:
                assert hashlib.sha256(calls["files"][sent_j["weights"]["file"]]).hexdigest() == digest
        else:
            sent_t, saved_t = safetensors.torch.load(sent), safetensors.torch.load(saved)
            assert sent_t.keys() == saved_t.keys() and all(torch.equal(sent_t[k], saved_t[k]) for k in sent_t), name

    card = huggingface_hub.ModelCard(calls["files"]["README.md"].decode())
    assert card.data.base_model == "org/tiny-bert" and card.data.library_name == "adapterkit"
    assert {"adapterkit", "lora", "bert"} <= set(card.data.tags) and card.data.datasets == ["glue"]
    config_json = card.text.split("## Adapter config")[1].split("```json")[1].split("```")[0]
    assert json.loads(config_json) == model.adapter_state.configs["sst"].to_dict()
    assert "| eval_accuracy | 0.8125 |" in card.text and "| epoch | 3 |" in card.text
    assert "model.load_adapter('me/sst-lora', set_active=True)" in card.text
    assert "AutoAdapterModel.from_pretrained('org/tiny-bert')" in card.text

    # what was uploaded, put in a cache as the Hub would serve it, loads back with the same outputs
    cache_repo(tmp_path / "cache", "me/sst-lora", calls["files"])
    other = adapterkit.AutoAdapterModel.from_pretrained("org/tiny-bert", cache_dir=tmp_path / "cache").eval()
    assert other.load_adapter("me/sst-lora", set_active=True, cache_dir=tmp_path / "cache") == "sst"
    with torch.no_grad():
        torch.testing.assert_close(other(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_card_usage_snippet_runs(tmp_path, monkeypatch, batch):
    calls = _captured_upload(monkeypatch)
    model = _pushed_model(tmp_path)
    model.push_adapter_to_hub("me/sst-lora", "sst")
    cache_repo(tmp_path / "cache", "me/sst-lora", calls["files"])
    snippet = calls["files"]["README.md"].decode().split("```python\n")[1].split("```")[0]
    # the snippet as a user runs it; the test's cache stands in for the default one
    snippet = snippet.replace(".from_pretrained('org/tiny-bert')",
                              f".from_pretrained('org/tiny-bert', cache_dir={str(tmp_path / 'cache')!r})")
    snippet = snippet.replace("set_active=True)", f"set_active=True, cache_dir={str(tmp_path / 'cache')!r})")
    scope = {}
    exec(snippet, scope)  # noqa: S102 - our own card's code
    with torch.no_grad():
        torch.testing.assert_close(scope["model"].eval()(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_existing_card_is_kept_unless_overwritten(tmp_path, monkeypatch):
    calls = _captured_upload(monkeypatch)
    model = _randomised()
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "README.md").write_text("my card\n")
    model.push_adapter_to_hub("me/a", "a", local_path=tmp_path / "stage")
    assert calls["files"]["README.md"] == b"my card\n"
    model.push_adapter_to_hub("me/a", "a", local_path=tmp_path / "stage", overwrite_adapter_card=True)
    assert calls["files"]["README.md"].startswith(b"---\n") and b"my card" not in calls["files"]["README.md"]


def test_push_offline_is_refused_before_any_request(tmp_path):
    """No capture here: the real HfApi, with HF_HUB_OFFLINE on, refuses the request itself; the files stay staged."""
    model = _randomised()
    with pytest.raises(AdapterError, match="HF_HUB_OFFLINE is set"):
        model.push_adapter_to_hub("me/a", "a", local_path=tmp_path / "stage")
    assert {"adapter_config.json", "adapter.safetensors", "README.md"} <= {p.name for p in (tmp_path / "stage").iterdir()}


def test_push_bad_card_option_and_unknown_adapter(tmp_path):
    model = _randomised()
    with pytest.raises(AdapterError, match="unknown adapter_card_kwargs citation"):
        model.push_adapter_to_hub("me/a", "a", adapter_card_kwargs={"citation": "x"})
    with pytest.raises(AdapterError, match="nope"):
        model.push_adapter_to_hub("me/a", "nope", local_path=tmp_path / "s")
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


# -- the environment, as users set it (a fresh process: huggingface_hub reads HF_HUB_* at import) ------------------
def _env(cache, **extra):
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return {**env, "HF_HUB_CACHE": str(cache), **extra}


def test_hf_hub_offline_and_cache_from_the_environment(tmp_path, batch):
    import subprocess
    import sys
    model = _randomised()
    model.save_adapter(tmp_path / "saved", "a")
    cache_repo(tmp_path / "cache", "org/env-lora", tmp_path / "saved")
    torch.save(_out(model, batch), tmp_path / "expected.pt")
    script = (
        "import sys, torch; sys.path.insert(0, 'tests'); import adapterkit; from conftest import tiny_model\n"
        "from test_hub import _out\n"
        "m = adapterkit.init(tiny_model()); m.load_adapter('org/env-lora', set_active=True)\n"
        "g = torch.Generator().manual_seed(7); ids = torch.randint(2, 99, (3, 9), generator=g)\n"
        "mask = torch.ones_like(ids); mask[1, -3:] = 0\n"
        f"assert torch.allclose(_out(m, dict(input_ids=ids, attention_mask=mask)), torch.load({str(tmp_path / 'expected.pt')!r}), atol=1e-6)\n"
        "try:\n    m.load_adapter('org/absent')\nexcept adapterkit.AdapterError as e:\n    print(e)\n")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root,
                          env=_env(tmp_path / "cache", HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'org/absent' is not a local directory and not in the Hugging Face cache" in done.stdout
    assert "HF_HUB_OFFLINE is set" in done.stdout and str(tmp_path / "cache") in done.stdout


def test_cli_model_from_the_cache(tmp_path):
    """`--model org/name` reads the model from the Hugging Face cache (the CLI never downloads by default)."""
    import subprocess
    import sys
    tiny_model().save_pretrained(tmp_path / "base")
    # the repo also lists a pickled copy of the weights, never downloaded: only safetensors are asked for
    cache_repo(tmp_path / "cache", "org/tiny-bert", tmp_path / "base", listed_only={"pytorch_model.bin": b"x" * 99})
    run = [sys.executable, "-m", "adapterkit", "summary", "--adapter", "lora"]
    done = subprocess.run(run + ["--model", "org/tiny-bert"], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lora" in done.stdout and "Full model" in done.stdout
    done = subprocess.run(run + ["--model", "org/absent"], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path / "cache"))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "'org/absent'" in lines[0], done.stderr
    assert "not in the Hugging Face cache" in lines[0] and "HF_HUB_OFFLINE=0" in lines[0]
