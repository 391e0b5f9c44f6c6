"""save_adapter_setup / load_adapter_setup: a whole composition (adapters, fusions, heads, the setup) in one folder.

The layout is the `adapters` package's (1.3.0), so a setup it saved loads here and ours loads there where the
files are in its format (`format="adapterhub"`): `adapter_setup.json` ({"adapter_setup": block, "head_setup":
None | true | name | [names] | block, "version"}) and one subfolder per adapter, per fusion (named like the
fusion) and per head (named like the head, usually the adapter's folder). Blocks are written as the package
writes them ({"type": "Stack", "children": [{"type": "single", "children": ["a"]}, ...], "kwargs": {...}}).

Differences from the package, on purpose: fusions anywhere in the tree are saved (it saves only a top-level Fuse
or one directly inside the top block), a Fuse's own name is kept (it drops it, so a renamed fusion did not come
back under its name), and everything is checked before anything is written or loaded: a failed load leaves the
model as it was. Each subfolder is one commit (io/staging.py) and `adapter_setup.json` is committed last, so a
crash mid-save leaves whole folders and the previous setup file or the new one, never a half-written file.
Names read from the file are checked like any adapter name (one path component), so no folder outside the
setup's directory is ever read or written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .blocks import AdapterCompositionBlock, Average, BatchSplit, Fuse, Parallel, Split, Stack, parse_composition
from .errors import AdapterError, CheckpointError
from .io import hub
from .io.files import read_json
from .io.staging import one_commit, recover
from .naming import child_directory
from .version import __version__

SETUP_CONFIG_NAME = "adapter_setup.json"
_BLOCKS = {cls.__name__: cls for cls in (Stack, Fuse, Split, BatchSplit, Parallel, Average)}
_KWARGS = {"Split": ("splits",), "BatchSplit": ("batch_sizes",), "Average": ("weights",), "Fuse": ("name",)}


# -- the setup file ------------------------------------------------------------------------------------
def block_to_dict(block: AdapterCompositionBlock) -> dict:
    """The package's JSON form of a block (iterative: no recursion limit on deep trees)."""
    out: dict = {}
    todo = [(block, out)]
    while todo:
        node, target = todo.pop()
        target["type"] = type(node).__name__
        target["children"] = []
        for child in node.children:
            if isinstance(child, str):
                target["children"].append({"type": "single", "children": [child]})
            else:
                target["children"].append({})
                todo.append((child, target["children"][-1]))
        kwargs = {key: getattr(node, key) for key in _KWARGS.get(type(node).__name__, ())}
        if isinstance(node, Fuse):
            kwargs = {"name": node._name} if node._name else {}  # the default name is derived, not stored
        if kwargs:
            target["kwargs"] = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in kwargs.items()}
    return out


def block_from_dict(data: Any, source) -> AdapterCompositionBlock:
    """A block from its JSON form; anything else is a CheckpointError naming `source` and what is allowed."""
    def node(value, where: str) -> AdapterCompositionBlock:
        if not isinstance(value, dict) or not isinstance(value.get("children"), list) or not value["children"]:
            raise CheckpointError(f"{source}: {where}: expected {{\"type\": <block>, \"children\": [...]}}, got "
                                  f"{value!r:.80}")
        kind = value.get("type")
        if kind not in _BLOCKS:
            raise CheckpointError(f"{source}: {where}: unknown block type {kind!r}; known: {', '.join(_BLOCKS)}")
        kwargs = value.get("kwargs") or {}
        allowed = _KWARGS.get(kind, ())
        if not isinstance(kwargs, dict) or set(kwargs) - set(allowed):
            raise CheckpointError(f"{source}: {where}: {kind} takes kwargs {', '.join(allowed) or '(none)'}, got "
                                  f"{kwargs!r:.80}")
        children = []
        for i, child in enumerate(value["children"]):
            if isinstance(child, dict) and child.get("type") == "single":
                names = child.get("children")
                if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
                    raise CheckpointError(f"{source}: {where}.children[{i}]: a single adapter is "
                                          f"{{\"type\": \"single\", \"children\": [<name>]}}, got {child!r:.80}")
                children.append(names[0])
            else:
                children.append(node(child, f"{where}.children[{i}]"))
        if kind == "Average":  # stored as the package stores them: already normalised
            kwargs = {**kwargs, "normalize_weights": False}
        try:
            return _BLOCKS[kind](*children, **kwargs)
        except (AdapterError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: {where}: not a valid {kind}: {e}") from None
    return node(data, "adapter_setup")


def _heads_of_setup(head_setup) -> list[str]:
    if head_setup is None or head_setup is False:
        return []
    if isinstance(head_setup, str):
        return [head_setup]
    if isinstance(head_setup, AdapterCompositionBlock):
        return head_setup.flatten()
    if isinstance(head_setup, (list, tuple)) and all(isinstance(h, str) for h in head_setup):
        return list(head_setup)
    raise AdapterError(f"head_setup must be None, True, a head name, a list of head names or a block; got "
                       f"{head_setup!r}")


def _fusions_of(setup: AdapterCompositionBlock) -> list[Fuse]:
    found, todo = [], [setup]
    while todo:
        block = todo.pop(0)
        if isinstance(block, Fuse) and block not in found:
            found.append(block)
        todo.extend(c for c in block.children if not isinstance(c, str))
    return found


# -- saving --------------------------------------------------------------------------------------------
def save_adapter_setup(model, save_directory: str | os.PathLike, adapter_setup, head_setup=None,
                       format: str = "adapterkit", safetensors: bool = True) -> None:
    """Write the setup's adapters, fusions and heads, then `adapter_setup.json` (see the module docstring)."""
    setup = parse_composition(adapter_setup)
    if setup is None:
        raise AdapterError("save_adapter_setup needs an adapter setup (a name, a list or a block), got None")
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise AdapterError(f"{directory} exists and is not a directory; save_adapter_setup writes a directory")
    model.adapter_state.check_setup(setup)
    fusions = _fusions_of(setup)
    for fusion in fusions:
        if fusion.name not in model.adapter_fusions:
            raise AdapterError(f"the setup uses fusion {fusion.name!r}, which the model does not have; fusions: "
                               f"{', '.join(map(repr, model.adapter_fusions)) or '(none)'}")
    if fusions and format == "peft":
        raise AdapterError(f"the setup has fusions ({', '.join(f.name for f in fusions)}), which have no PEFT form; "
                           "save it with format='adapterkit' or 'adapterhub'")
    heads = getattr(model, "heads", None)
    if head_setup is not None and head_setup is not False and heads is None:
        raise AdapterError(f"{type(model).__name__} has no prediction heads; save with head_setup=None")
    root_head = None
    if head_setup is True:
        root_head = model.active_head or (next(iter(heads)) if len(heads) == 1 else None)
        if root_head is None:
            raise AdapterError("head_setup=True saves the active (or only) head, and the model has neither; name "
                               f"the heads instead (heads: {', '.join(map(repr, heads)) or '(none)'})")
        head_names = []
    else:
        head_names = _heads_of_setup(head_setup)
    for name in head_names + ([root_head] if root_head else []):
        if name not in heads:
            raise AdapterError(f"head_setup names head {name!r}, which the model does not have; heads: "
                               f"{', '.join(map(repr, heads)) or '(none)'}")
    # one entry per folder (all names checked before any write): what goes in it
    folders: dict[Path, list] = {}
    for name in setup.flatten():
        folders.setdefault(child_directory(directory, name), []).append(("adapter", name))
    for fusion in fusions:
        folders.setdefault(child_directory(directory, fusion.name, "fusion"), []).append(("fusion", fusion.name))
    for name in head_names:
        folders.setdefault(child_directory(directory, name, "head"), []).append(("head", name))
    directory.mkdir(parents=True, exist_ok=True)
    for folder, items in folders.items():
        with one_commit(folder):
            for kind, name in items:
                if kind == "adapter":
                    model.save_adapter(folder, name, format=format, safetensors=safetensors)
                elif kind == "fusion":
                    model.save_adapter_fusion(folder, name, format=format, safetensors=safetensors)
                else:  # staged again if save_adapter wrote it already (the head named like the adapter): one file
                    model.save_head(folder, name)
    config = {"adapter_setup": block_to_dict(setup),
              "head_setup": block_to_dict(head_setup) if isinstance(head_setup, AdapterCompositionBlock)
              else list(head_setup) if isinstance(head_setup, tuple) else head_setup,
              "version": f"adapterkit.{__version__}"}
    with one_commit(directory) as stage:  # the commit point of the whole save
        if root_head is not None:
            model.save_head(directory, root_head)
        stage.write_json(SETUP_CONFIG_NAME, config)


# -- loading -------------------------------------------------------------------------------------------
def read_setup(directory: Path) -> tuple[AdapterCompositionBlock, Any]:
    recover(directory)
    config_file = directory / SETUP_CONFIG_NAME
    data = read_json(config_file, "adapter setup config")
    if "adapter_setup" not in data:
        raise CheckpointError(f"{config_file}: no 'adapter_setup' key; not a saved adapter setup")
    setup = block_from_dict(data["adapter_setup"], config_file)
    head_setup = data.get("head_setup")
    if isinstance(head_setup, dict):
        head_setup = block_from_dict(head_setup, config_file)
    elif not (head_setup is None or isinstance(head_setup, (bool, str))
              or (isinstance(head_setup, list) and all(isinstance(h, str) for h in head_setup))):
        raise CheckpointError(f"{config_file}: head_setup must be null, true, a head name, a list of names or a "
                              f"block; got {head_setup!r:.80}")
    return setup, head_setup


def load_adapter_setup(model, path, set_active: bool = False, **hub_options) -> tuple[Any, Any]:
    """Load a folder written by `save_adapter_setup` (ours or the `adapters` package's), or a Hub repo of one;
    returns (adapter setup, head setup). Nothing on the model may have the names the setup brings; on any error
    everything loaded so far is taken out again."""
    heads = getattr(model, "heads", None)
    files = tuple(getattr(model, "hub_files", hub.ADAPTER_FILES)) + hub.FUSION_FILES  # an AdapterModel's: + heads'
    directory = hub.resolve_path(path, (SETUP_CONFIG_NAME,) + files, nested=True, **hub_options)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such adapter setup directory")
    setup, head_setup = read_setup(directory)
    config_file = directory / SETUP_CONFIG_NAME
    names = setup.flatten()
    fusions = _fusions_of(setup)
    head_names = [] if head_setup is True else _heads_of_setup(head_setup)
    if (head_setup is True or head_names) and heads is None:
        raise CheckpointError(f"{config_file}: the setup has heads ({head_setup!r}) and {type(model).__name__} has "
                              "no prediction heads; load it into an AdapterModel (AutoAdapterModel)")
    try:  # names from the file, checked: every folder is one component inside `directory`
        folders = {name: child_directory(directory, name) for name in names}
        fusion_folders = {f.name: child_directory(directory, f.name, "fusion") for f in fusions}
        head_folders = {name: child_directory(directory, name, "head") for name in head_names}
    except AdapterError as e:
        raise CheckpointError(f"{config_file}: {e}") from None
    taken = ([n for n in names if n in model.adapter_state.configs]
             + [f for f in fusion_folders if f in model.adapter_fusions]
             + [h for h in head_names if h in (heads or {})])
    if taken:
        raise AdapterError(f"{config_file}: the model already has {', '.join(map(repr, taken))}; delete them first "
                           "(or load into a fresh model)")
    before_heads = set(heads or ())
    before_head = model.active_head if heads is not None else None
    added, added_fusions = [], []
    try:
        for name in names:
            model.load_adapter(folders[name], load_as=name)
            added.append(name)
        for name, folder in fusion_folders.items():
            model.load_adapter_fusion(folder, load_as=name)
            added_fusions.append(name)
        for name in head_names:
            if name not in model.heads:
                model.load_head(head_folders[name], load_as=name, set_active=False)
        if head_setup is True:
            loaded = model.load_head(directory, set_active=False)
            head_names = [loaded]
        if set_active:
            model.set_active_adapters(setup)  # an AdapterModel activates the head named like the last adapter
            if heads is not None and len(head_names) == 1:
                model.active_head = head_names[0]
    except BaseException:  # the model as it was: nothing it had was replaced, so removing what came is enough
        for name in reversed(added_fusions):
            model.delete_adapter_fusion(name)
        for name in set(heads or ()) - before_heads:
            model.delete_head(name)
        for name in reversed(added):
            model.delete_adapter(name)
        if heads is not None:
            model._active_head = before_head
        raise
    return setup, head_setup
