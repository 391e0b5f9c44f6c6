"""The static half of interface inference: layer stacks, attention modules and projections, found from the module
tree and the names transformers uses. Everything found here is a guess until probe.py has checked it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

Q = ("q_proj", "query", "q", "q_lin", "query_proj", "wq", "to_q", "q_linear", "Wq", "project_q")
K = ("k_proj", "key", "k", "k_lin", "key_proj", "wk", "to_k", "k_linear", "Wk", "project_k")
V = ("v_proj", "value", "v", "v_lin", "value_proj", "wv", "to_v", "v_linear", "Wv", "project_v")
QKV = ("c_attn", "qkv_proj", "query_key_value", "Wqkv", "qkv", "in_proj", "W_pack", "qkv_linear")
OUT = ("o_proj", "out_proj", "o", "out_lin", "c_proj", "dense", "proj", "out", "wo", "Wo", "to_out", "o_linear",
       "attention_out", "output.dense")
UP = ("up_proj", "fc1", "c_fc", "wi", "wi_1", "lin1", "dense_h_to_4h", "fc_in", "w3", "linear1", "fc_1",
      "gate_up_proj", "Wi", "intermediate.dense", "ff_in", "ffn", "intermediate_dense", "w_in.w_0", "w_in.w_1")
GATE = ("gate_proj", "wi_0", "w1")
DOWN = ("down_proj", "fc2", "c_proj", "wo", "lin2", "dense_4h_to_h", "fc_out", "w2", "linear2", "fc_2", "Wo",
        "output.dense", "ff_out", "ffn_output", "output_dense", "w_out")  # (w_in.w_0/1, w_out: CPM-Ant's)
CROSS_WORDS = ("cross", "encoder_attn", "encdec", "enc_dec", "encoder_attention", "src_attn")
MOE_WORDS = ("expert", "moe", "sparse", "router")
EXPERTS_UP = ("gate_up_proj", "up_proj")  # transformers 5's fused expert weights (3D parameters)
EXPERTS_DOWN = ("down_proj",)


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def out_in(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of a Linear or a transformers Conv1D (weight stored [in, out])."""
    w = module.weight
    return (w.shape[1], w.shape[0]) if type(module).__name__ == "Conv1D" else (w.shape[0], w.shape[1])


def _leaf_name(path: str, within: str) -> str:
    return path[len(within) + 1:] if within else path


@dataclass
class Attention:
    """One attention module of a layer (paths relative to the layer)."""

    core: str  # the module owning q/k/v (or the fused projection)
    projections: dict = field(default_factory=dict)  # "q"/"k"/"v"/"o" -> path
    fused: str | None = None  # the fused q/k/v projection, its split still to be confirmed
    cross: bool = False


@dataclass
class Layer:
    """What one layer (of a stack) holds, as paths relative to it."""

    stack: str
    attentions: list = field(default_factory=list)
    up: list = field(default_factory=list)
    down: list = field(default_factory=list)
    leaves: list = field(default_factory=list)  # linear leaves outside the attention modules (the FFN's, unnamed)
    unresolved: dict = field(default_factory=dict)
    moe: str | None = None  # the mixture-of-experts block (the FFN sublayer's module), where the FFN is one
    experts: str | None = None  # its fused experts module (3D weights), where it has one
    # a dense first layer's stack with MoE layers after it: (a MoE layer, its fused expert weights' up and down
    # paths), checked by their shapes (the check forward records the first layer only)
    later_experts: tuple | None = None


def _homogeneous_lists(base: nn.Module) -> dict[str, nn.ModuleList]:
    return {path: m for path, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m)
            and len({type(c) for c in m}) == 1}


def _cores(layer: nn.Module) -> list[Attention]:
    """Modules owning q, k and v (or a fused q/k/v) leaves, outermost first."""
    found = []
    for path, module in layer.named_modules():
        children = dict(module.named_children())
        linear = {n for n, c in children.items() if is_linear(c)}
        q, k, v = (next((n for n in names if n in linear), None) for names in (Q, K, V))
        qkv = next((n for n in QKV if n in linear), None)
        if q and k and v or qkv:
            att = Attention(core=path, cross=any(w in path.lower() for w in CROSS_WORDS))
            prefix = f"{path}." if path else ""
            if q and k and v:
                att.projections.update(q=prefix + q, k=prefix + k, v=prefix + v)
            else:
                att.fused = prefix + qkv
            found.append(att)
    return found


def _output_projection(layer: nn.Module, att: Attention, taken: set) -> str | None:
    """The attention's output projection: a child of its core, else (BERT's `attention.output.dense`) one in the
    core's parent, when that parent is not the layer itself."""
    scopes = [att.core]
    parent = att.core.rpartition(".")[0]
    if parent:
        scopes.append(parent)
    for scope in scopes:
        for name in OUT:
            path = f"{scope}.{name}" if scope else name
            module = _find(layer, path)
            if module is not None and is_linear(module) and path not in taken:
                return path
    return None


def _find(root: nn.Module, path: str):
    module = root
    for part in path.split("."):
        module = getattr(module, part, None) if not part.lstrip("-").isdigit() else (
            module[int(part)] if isinstance(module, (nn.ModuleList, nn.Sequential)) and -len(module) <= int(part)
            < len(module) else None)
        if not isinstance(module, nn.Module):
            return None
    return module


def _ffn(layer: nn.Module, desc: Layer) -> None:
    excluded = [a.core for a in desc.attentions]
    excluded += [a.core.rpartition(".")[0] for a in desc.attentions if a.core.rpartition(".")[0]]
    taken = {p for a in desc.attentions for p in a.projections.values()}
    leaves = [(p, m) for p, m in layer.named_modules() if is_linear(m) and p not in taken
              and not any(p.startswith(e + ".") for e in excluded)]
    desc.leaves = [p for p, _ in leaves]
    if any(_is_moe_type(m) for p, m in layer.named_modules() if p and not any(
            p == e or p.startswith(e + ".") for e in excluded)) or any(
            any(w in p.lower() for w in MOE_WORDS) for p, _ in leaves):
        _moe(layer, desc, excluded)
        return

    def matching(names):
        return [p for p, _ in leaves if any(p == n or p.endswith("." + n) for n in names)]
    up, gate, down = matching(UP), matching(GATE), matching(DOWN)
    gate = [p for p in gate if p not in up]
    desc.up = up + gate
    desc.down = [p for p in down if p not in desc.up]
    if not desc.up:
        desc.unresolved["intermediate"] = "no FFN input projection by a known name (up_proj, fc1, c_fc, wi, ...)"
    if not desc.down:
        desc.unresolved["output"] = "no FFN output projection by a known name (down_proj, fc2, c_proj, wo, ...)"


def _is_moe_type(module: nn.Module) -> bool:
    """A MoE block, its experts or its router, by class name (Qwen3MoeSparseMoeBlock, GraniteMoeMoE, ...; not the
    dense Glm4MoeMLP of a MoE model's first layers)."""
    name = type(module).__name__.lower()
    return name.endswith("moe") or any(w in name for w in ("expert", "sparse", "router"))


def _moe(layer: nn.Module, desc: Layer, excluded: list) -> None:
    """A mixture-of-experts FFN: its block (the sublayer module, whose output the layer adds to the residual) and
    the fused 3D expert weights by transformers 5's names; the probe confirms both or leaves them out."""
    desc.unresolved["intermediate"] = desc.unresolved["output"] = "a mixture-of-experts FFN"
    fused = [(p, m) for p, m in layer.named_modules() if p and not any(p == e or p.startswith(e + ".")
                                                                        for e in excluded)
             and any(m._parameters.get(n) is not None and m._parameters[n].dim() == 3 for n in EXPERTS_DOWN)]
    if len(fused) == 1:
        path, module = fused[0]
        desc.experts = path
        desc.up = [f"{path}.{n}" for n in EXPERTS_UP if module._parameters.get(n) is not None
                   and module._parameters[n].dim() == 3][:1]
        desc.down = [f"{path}.{n}" for n in EXPERTS_DOWN if module._parameters.get(n) is not None][:1]
        block = path.rpartition(".")[0]
        desc.moe = block or None
    if desc.moe is None:  # no fused experts: the outermost module named as a MoE block
        desc.moe = next((p for p, m in layer.named_modules() if p and "." not in p and p not in excluded
                         and _is_moe_type(m)), None)


def _later_experts(stack: nn.ModuleList, first: Layer) -> tuple | None:
    """(layer, up paths, down paths) of the first later layer whose FFN has fused experts, or None."""
    for layer in list(stack)[1:]:
        desc = Layer(stack=first.stack, attentions=first.attentions)
        _ffn(layer, desc)
        if desc.experts:
            return layer, desc.up, desc.down
    return None


def describe_layers(base: nn.Module) -> dict[str, Layer]:
    """stack path -> the description of its first layer, for each stack whose layers hold an attention module."""
    lists = _homogeneous_lists(base)
    stacks: dict[str, Layer] = {}
    for path, stack in lists.items():
        first = stack[0]
        cores = [c for c in _cores(first) if c.core]  # (a core equal to the block: the block is an attention)
        if not cores:
            continue
        # the innermost list wins: skip a list whose blocks hold another homogeneous list with attention in it
        inner = [p for p in lists if p.startswith(f"{path}.0.") and p != path]
        if any(_cores(lists[p][0]) for p in inner):
            continue
        desc = Layer(stack=path)
        taken: set = set()
        for att in cores:
            if any(att.core.startswith(o.core + ".") for o in desc.attentions):
                continue  # nested inside one found already
            o = _output_projection(first, att, taken)
            if o is not None:
                att.projections["o"] = o
                taken.add(o)
            desc.attentions.append(att)
        _ffn(first, desc)
        if desc.moe is None:
            desc.later_experts = _later_experts(stack, desc)
        stacks[path] = desc
    return stacks
