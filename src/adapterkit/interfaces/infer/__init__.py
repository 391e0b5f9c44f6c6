"""An interface for a model with none registered: found from the module tree (tree.py), checked by one tiny
forward (probe.py, residual.py), logged as source to copy. What cannot be confirmed is left out, with the reason
in `ModelInterface.unresolved`, so the methods that need it are refused naming it; nothing attaches on a guess."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch.nn as nn

from ...errors import AdapterError
from ...nn.experts import ExpertsTarget, experts_parameter
from ..base import FusedSlice, ModelInterface, ResidualSite, SublayerSite, resolve, site_in
from .inputs import dummy_inputs
from .own_attention import joined_self_attention, stacks_own_attention
from .perturb import perturbed_split
from .probe import BIASES, attention_calls, record
from .residual import close, post_ln_site, sublayer_sites
from .tree import Layer, describe_layers, out_in

logger = logging.getLogger("adapterkit.interfaces.infer")

__all__ = ["infer_interface", "dummy_inputs"]


def _path_of(root: nn.Module, target: nn.Module) -> str | None:
    return next((p for p, m in root.named_modules() if m is target), None)


def _embeddings(base: nn.Module, unresolved: dict) -> str:
    try:
        emb = base.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        emb = None
    path = _path_of(base, emb) if emb is not None else None
    if path is None:  # (audio models: a feature projection; the prompt and invertible sites ask for more anyway)
        path = next((p for p, _ in base.named_modules() if "embed" in p.lower()), None)
    if path is None:
        unresolved["embeddings"] = "no input embedding module"
        return next(iter(dict(base.named_children())), "")
    parent = path.rpartition(".")[0]
    return parent if parent and "embed" in parent.rpartition(".")[2].lower() else path


def _fused_split(att, calls, seen, config) -> dict:
    """q/k/v as slices of the fused projection, in the layout whose value part equals the attention's value
    states (contiguous [q | k | v], grouped-query sizes, or per-head interleaved)."""
    fused_call = next((c for c in calls if c.path == att.fused), None)
    probe = next((s for s in seen if s[0] is not None), None)
    if fused_call is None or probe is None:
        return {}
    _, query, _, value = probe
    out = fused_call.out
    if query.dim() != 4 or value.dim() != 4 or out.dim() != 3:
        return {}
    b, nkv, s, hd = value.shape
    nh = query.shape[1]
    return _split_matching(att.fused, out, nh, nkv, hd, config, lambda v: close(v, value))


def _split_matching(fused: str, out, nh: int, nkv: int, hd: int, config, matches) -> dict:
    """The first layout of `out` ([batch, seq, (nh + 2 nkv) hd]) whose value part (as [b, nkv, s, hd]) matches."""
    b, s = out.shape[:2]
    if out.shape[-1] == (nh + 2 * nkv) * hd:
        v = out[..., (nh + nkv) * hd:].reshape(b, s, nkv, hd).transpose(1, 2)
        if matches(v):
            sizes = None if nh == nkv else (nh * hd, nkv * hd, nkv * hd)
            return {m: FusedSlice(fused, i, sizes=sizes) for i, m in enumerate("qkv")}
    if nh == nkv and out.shape[-1] == 3 * nh * hd:
        v = out.reshape(b, s, nh, 3 * hd)[..., 2 * hd:].transpose(1, 2)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config  # (Fuyu's is nested)
        attr = next((a for a in ("num_attention_heads", "n_head", "num_heads", "n_heads")
                     if getattr(config, a, None) == nh or getattr(text, a, None) == nh), None)
        if matches(v) and attr:
            return {m: FusedSlice(fused, i, per_head=attr) for i, m in enumerate("qkv")}
    return {}


def _causal_split(att, calls, config) -> dict:
    """Without the registry: in a causal layer the first position attends to itself alone, so the output
    projection's input there is that position's value states, one head after the other."""
    fused = next((c for c in calls if c.path == att.fused), None)
    o = next((c for c in calls if c.path == att.projections.get("o")), None)
    nh = next((getattr(config, a) for a in ("num_attention_heads", "n_head", "num_heads", "n_heads")
               if isinstance(getattr(config, a, None), int)), None)
    if fused is None or o is None or not nh or o.inp is None or o.inp.dim() != 3 or o.inp.shape[-1] % nh:
        return {}
    hd = o.inp.shape[-1] // nh
    extra = fused.out.shape[-1] - nh * hd
    if extra <= 0 or extra % (2 * hd):
        return {}
    nkv = extra // (2 * hd)
    if nh % nkv:
        return {}
    ctx = o.inp[:, :1]

    def matches(v):  # v: [b, nkv, s, hd] -> position 0, heads repeated to nh, flattened
        v0 = v[:, :, :1].repeat_interleave(nh // nkv, dim=1).transpose(1, 2).reshape(ctx.shape)
        return close(v0, ctx) and not close(o.inp[:, 1:2], ctx)
    return _split_matching(att.fused, fused.out, nh, nkv, hd, config, matches)


class _Stack:
    """One stack's findings: projections, sites and what could not be confirmed."""

    def __init__(self, desc: Layer):
        self.desc = desc
        self.attention: dict = {}
        self.cross: dict = {}
        self.self_module: str | None = None
        self.cross_module: str | None = None
        self.registry = False
        self.sites: dict = {}
        self.unresolved: dict = dict(desc.unresolved)
        self.shapes: set = set()


def _check_stack(model, layer: nn.Module, desc: Layer, calls, seen_by_id, hidden: int | None,
                 inputs: dict) -> _Stack:
    st = _Stack(desc)
    ran = {c.path: c for c in reversed(calls)}  # path -> its first call
    x = next(c for c in calls if c.path == "").inp
    width = st.width = x.shape[-1] if x is not None else hidden
    selfs = [a for a in desc.attentions if not a.cross]
    crosses = [a for a in desc.attentions if a.cross and a.core in ran]
    if len(crosses) < len([a for a in desc.attentions if a.cross]):
        st.unresolved["cross_adapter"] = st.unresolved["cross_attention"] = (
            "the cross-attention does not run in the check forward (no encoder states)")
    if len(selfs) > 1:  # a hybrid layer (Falcon-H1: a Mamba mixer's fused in_proj beside the attention): the one
        separate = [a for a in selfs if a.fused is None and all(m in a.projections for m in "qkv")]  # with q, k, v
        selfs = separate if len(separate) == 1 else selfs
    if len(selfs) != 1 or len(crosses) > 1:
        st.unresolved["attention"] = f"{len(selfs)} self-attention modules per layer (expected one)"
        selfs, crosses = selfs[:1] if len(selfs) == 1 else [], []
    in_layer = {id(m): p for p, m in layer.named_modules()}
    seen = {in_layer[i]: s for i, s in seen_by_id.items() if i in in_layer}
    for att, key in [(a, "self") for a in selfs] + [(a, "cross") for a in crosses]:
        projections = dict(att.projections)
        if att.fused:
            mine = [s for p, s in seen.items() if p == att.core or p.startswith(att.core + ".")
                    or att.core.startswith(p + ".")]
            split = _fused_split(att, calls, mine, model.config) or _causal_split(att, calls, model.config) or (
                perturbed_split(model, layer, att.fused, att.projections.get("o"), inputs))
            if not split:
                for m in "qkv":
                    st.unresolved[f"attn_{m}"] = f"the q/k/v layout of the fused {att.fused} could not be confirmed"
            projections.update(split)
        for m, spec in list(projections.items()):
            path = spec.module if isinstance(spec, FusedSlice) else spec
            if path not in ran:
                del projections[m]
                st.unresolved[f"attn_{m}"] = f"{path} does not run in the check forward"
        if "o" in projections:
            o_call = ran[projections["o"]]
            qkv = [ran[(s.module if isinstance(s, FusedSlice) else s)] for k, s in projections.items() if k != "o"]
            if any(c.start > o_call.start for c in qkv) or out_in(o_call.module)[0] != width:
                del projections["o"]
                st.unresolved["attn_o"] = "the attention output projection could not be confirmed"
        elif key == "self":
            st.unresolved["attn_o"] = f"no output projection of {att.core} by a known name (o_proj, out_proj, dense...)"
        o_in = ran[projections["o"]].inp if "o" in projections else None
        v_in = ran[projections["v"]].inp if isinstance(projections.get("v"), str) else None
        if o_in is not None and v_in is not None and v_in.abs().any() and not o_in.abs().any():  # (MRA without
            for m in "qkv":  # its CUDA kernel returns zeros)
                projections.pop(m, None)
                st.unresolved[f"attn_{m}"] = (f"the attention output of {att.core} is all zeros in the check forward: "
                                              "q/k/v do not reach it (an attention kernel missing on this device?)")
        caller = next((p for p in seen if p == att.core or p.startswith(att.core + ".")), None)
        if caller is not None and seen[caller][3].dim() == 4:
            st.shapes.add((seen[caller][3].shape[1], seen[caller][3].shape[-1]))  # (kv heads, head dim)
        if key == "self":
            st.attention, st.self_module, st.registry = projections, caller or att.core, caller is not None
        else:
            st.cross, st.cross_module = projections, caller
            if caller is None:
                st.unresolved["cross_attention"] = "the cross-attention does not call the attention registry"
    if not desc.up and not desc.down and "intermediate" in desc.unresolved and len(desc.leaves) == 2 and all(
            p in ran for p in desc.leaves):  # two unnamed FFN linears (a Sequential): in order, width -> ? -> width
        first, second = sorted(desc.leaves, key=lambda p: ran[p].start)
        if out_in(ran[first].module)[1] == width and out_in(ran[second].module)[0] == width:
            desc.up, desc.down = [first], [second]
            for k in ("intermediate", "output", "output_adapter"):
                desc.unresolved.pop(k, None)
                st.unresolved.pop(k, None)
    inner: dict = {}  # group -> the widths its projections run on, where that is not the layer width
    for group, paths, side in (("up", desc.up, 1), ("down", desc.down, 0)):
        kept = [p for p in paths if (_experts_width(layer, desc, ran, p, side, width) if p not in ran
                                     else out_in(ran[p].module)[side]) == width]
        if desc.later_experts is not None:  # a dense first layer, fused experts in later layers
            later, up, down = desc.later_experts
            kept += [p for p in (up if side else down) if _static_width(later, p, side, width) == width]
        setattr(st, group, kept)
        if paths and not kept:
            inner[group] = {out_in(ran[p].module)[side] for p in paths if p in ran}
            st.unresolved["intermediate" if group == "up" else "output"] = (
                f"the FFN projections {paths} do not run on the layer width {width}")
    if len(inner) == 2 and len(inner["up"] | inner["down"]) == 1 and all(p in ran for p in desc.up + desc.down):
        # the FFN of a bottleneck layer (MobileBERT): every projection, from and to one inner width; LoRA and
        # (IA)^3 reach it, a bottleneck adapter (built for the layer width) does not
        st.up, st.down = list(desc.up), list(desc.down)
        st.unresolved.pop("intermediate"), st.unresolved.pop("output")
        st.unresolved["output_adapter"] = (f"the FFN runs at an inner width {inner['up'].pop()}, not the layer width "
                                           f"{width} (a bottleneck layer)")
    # residual sites
    if x is None or hidden and width != hidden:
        st.unresolved.update({k: f"the layers of {desc.stack} are {width} wide, not the {hidden} of "
                                 "config.hidden_size" for k in ("mh_adapter", "cross_adapter", "output_adapter")})
        return st
    cores = []
    if selfs:  # (the sublayer ends with its output projection where there is one: ALBERT norms inside)
        cores.append(("mh_adapter", st.attention.get("o") or selfs[0].core, st.attention.get("o")))
    if crosses:
        cores.append(("cross_adapter", st.cross.get("o") or crosses[0].core, st.cross.get("o")))
    if desc.moe and desc.moe in ran:  # a mixture-of-experts FFN: the sublayer output is the MoE block's
        cores.append(("output_adapter", desc.moe, None))
    elif any(p in ran for p in st.down) and not inner:  # (the last that is a module: not a later layer's experts)
        down = [p for p in st.down if p in ran][-1]
        cores.append(("output_adapter", down, down))
    post = {loc: post_ln_site(calls, dense) for loc, _, dense in cores if dense}
    if all(post.get(loc) for loc, _, _ in cores):
        st.sites = {loc: post[loc] for loc, _, _ in cores}
    else:
        sites, why = sublayer_sites(calls, [(loc, core) for loc, core, _ in cores])
        if why and desc.moe and len(cores) > 1:  # the MoE block's output is not what the layer adds (a shared
            moe_why = why  # expert added beside it...): the other sublayers without it
            cores = [c for c in cores if c[0] != "output_adapter"]
            sites, why = sublayer_sites(calls, [(loc, core) for loc, core, _ in cores])
            st.unresolved["output_adapter"] = f"mixture-of-experts block {desc.moe}: {moe_why}"
        if why and len(cores) > 1:  # one sublayer's add not found (Falcon-H1's attention, summed with a Mamba
            alone = {loc: sublayer_sites(calls, [(loc, core)]) for loc, core, _ in cores}  # mixer's): the others,
            if any(w is None for _, w in alone.values()):  # each confirmed alone
                sites = {loc: found[loc] for loc, (found, w) in alone.items() if w is None}
                st.unresolved.update({loc: w for loc, (_, w) in alone.items() if w})
                why = None
        st.sites = sites
        if why:
            st.unresolved.update({loc: why for loc, _, _ in cores})
        if "cross_adapter" in sites:
            site = sites["cross_adapter"]
            sites["cross_adapter"] = type(site)(**{**site.__dict__, "guard": crosses[0].core})
    if not st.down and not any(loc == "output_adapter" for loc, _, _ in cores):
        st.unresolved.setdefault("output_adapter", st.unresolved.get("output", "no FFN output projection found"))
    return st


def _experts_width(layer: nn.Module, desc, ran: dict, path: str, side: int, width) -> int | None:
    """The input (`side` 1) or output (0) width of a fused experts weight at `path`, if its module ran."""
    if not desc.experts or not path.startswith(desc.experts + ".") or desc.experts not in ran:
        return None
    return _static_width(layer, path, side, width)


def _static_width(layer: nn.Module, path: str, side: int, width) -> int | None:
    found = experts_parameter(layer, path)
    if found is None:
        return None
    try:
        target = ExpertsTarget(*found, **({"in_width": width} if side else {"out_width": width}))
    except AdapterError:  # the layout cannot be told (no `is_transposed`, square shapes)
        return None
    return target.in_features if side else target.out_features


def _negative(layer: nn.Module, path: str) -> str:
    """`path` with each ModuleList index counted from the end (T5's FFN is `layer.-1` in both stacks)."""
    parts, module = path.split("."), layer
    for i, part in enumerate(parts):
        if part.isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
            parts[i] = str(int(part) - len(module))
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part, None)
        if module is None:
            return path
    return ".".join(parts)


def _alternatives(pairs) -> object:
    """Projection paths that differ between stacks as `a|b` alternatives, where each stack's layer resolves them
    to its own module (BLIP's text and vision towers name their FFN differently); else None."""
    values = [v for v, _ in pairs]
    if isinstance(values[0], tuple) and all(isinstance(v, tuple) and len(v) == len(values[0]) for v in values):
        keys = range(len(values[0]))
    elif isinstance(values[0], dict) and all(isinstance(v, dict) and v.keys() == values[0].keys() for v in values):
        keys = list(values[0])
    else:
        return None
    merged = {}
    for k in keys:
        paths = [v[k] for v in values]
        if not all(isinstance(p, str) for p in paths):
            return None
        joined = "|".join(dict.fromkeys(paths))
        if any(resolve(layer, joined) is not resolve(layer, v[k]) for v, layer in pairs):
            return None
        merged[k] = joined
    return tuple(merged.values()) if isinstance(values[0], tuple) else merged


def _renamed(value, fn):
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_renamed(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _renamed(v, fn) for k, v in value.items()}
    if isinstance(value, FusedSlice):
        return replace(value, module=fn(value.module))
    if isinstance(value, ResidualSite):  # (its dense / dropout / layer_norm are relative to its module)
        return replace(value, module=fn(value.module))
    if isinstance(value, SublayerSite):
        return replace(value, **{f: fn(getattr(value, f)) for f in ("output", "residual", "layer_norm", "guard")
                                 if getattr(value, f)})
    return value


def _merge(values: list, layers: list, what: str, unresolved: dict, key: str):
    """One value shared by all stacks (None entries skipped), else None with a reason. Paths that differ only in
    a ModuleList index agree when counted from the end."""
    pairs = [(v, layer) for v, layer in zip(values, layers) if v not in (None, {}, ())]
    if not pairs:
        return None
    if all(v == pairs[0][0] for v, _ in pairs):
        return pairs[0][0]
    counted = [_renamed(v, lambda p, layer=layer: _negative(layer, p)) for v, layer in pairs]
    if all(v == counted[0] for v in counted):
        return counted[0]
    if key in ("attention", "cross", "intermediate", "output"):
        joined = _alternatives(pairs)
        if joined is not None:
            return joined
    if key in ("attention", "cross") and all(isinstance(v, dict) for v, _ in pairs):
        # the projections every stack confirms alike (Hiera's stages: the output projection changes width where a
        # stage does, so only some stacks confirm it); the others are left out, with the reason
        first = pairs[0][0]
        common = {k: s for k, s in first.items() if all(v.get(k) == s for v, _ in pairs)}
        if common:
            for k in sorted(set().union(*(v for v, _ in pairs)) - set(common)):
                unresolved[f"{'attn' if key == 'attention' else 'cross_attn'}_{k}"] = (
                    f"the layer stacks differ in their {k} projection: {[v.get(k) for v, _ in pairs]}")
            return common
    if key in ("self_attention", "cross_attention") and all(isinstance(v, str) for v, _ in pairs):
        joined = "|".join(dict.fromkeys(v for v, _ in pairs))  # (two towers naming their attention differently)
        if all(resolve(layer, joined) is resolve(layer, v) for v, layer in pairs):
            return joined
    if key in ("mh_adapter", "cross_adapter", "output_adapter"):
        options = tuple(dict.fromkeys(v for v, _ in pairs))  # one site spec per stack: each layer finds its own
        if all(site_in(layer, options) == v for v, layer in pairs):
            return options
    unresolved[key] = f"the layer stacks differ in {what}: {[v for v, _ in pairs]}"
    return None


def infer_interface(model: nn.Module) -> ModelInterface:
    """A `ModelInterface` for `model`, checked by one forward on a tiny input; logged as source to copy."""
    base = getattr(model, "base_model", model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    width = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    stacks = describe_layers(base)
    if not stacks:
        raise AdapterError(
            f"no adapter interface for model_type {model_type!r}, and none could be inferred: {type(base).__name__} "
            "has no layer stack (a ModuleList of identical blocks) with an attention module (q/k/v projections "
            "by a known name). Describe it with adapterkit.ModelInterface and pass init(model, interface=...)")
    unresolved: dict = {}
    layers = {path: base.get_submodule(path)[0] for path in stacks}
    was_training = model.training
    model.eval()
    try:
        inputs = dummy_inputs(model)
        calls = record(model, layers, inputs)
        try:
            seen = attention_calls(model, inputs)
            biases = tuple(sorted(BIASES))
        except Exception as e:  # noqa: BLE001 - a model that breaks under another implementation name
            seen, biases = {}, ()
            unresolved["attention_registry"] = f"the forward fails through a registered attention function ({e})"
    except Exception as e:  # noqa: BLE001 - any failure of the check forward leaves the sites unconfirmed
        raise AdapterError(f"no adapter interface for model_type {model_type!r}, and the check forward of the "
                           f"inferred one failed: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    checked = {}
    for path, desc in stacks.items():
        if not any(c.path == "" for c in calls[path]):
            continue  # a stack that does not run for this model's forward (e.g. an unused tower)
        checked[path] = _check_stack(model, layers[path], desc, calls[path], seen, width, inputs)
        width = width or checked[path].width  # a two-tower model without config.hidden_size: its first tower's
    if not checked:
        raise AdapterError(f"no adapter interface for model_type {model_type!r}: none of the layer stacks "
                           f"{list(stacks)} runs in the check forward")
    for st in checked.values():
        for k, v in st.unresolved.items():
            unresolved.setdefault(k, v)
    sts = list(checked.values())
    lays = [layers[p] for p in checked]
    attention = _merge([s.attention for s in sts], lays, "their attention projections", unresolved, "attention") or {}
    cross = _merge([s.cross for s in sts], lays, "their cross-attention projections", unresolved, "cross") or {}
    intermediate = _merge([tuple(s.up) for s in sts], lays, "their FFN input projections", unresolved,
                          "intermediate") or ()
    output = _merge([tuple(s.down) for s in sts], lays, "their FFN output projections", unresolved, "output") or ()
    sites = {}
    for loc in ("mh_adapter", "cross_adapter", "output_adapter"):
        spec = _merge([s.sites.get(loc) for s in sts], lays, f"their {loc} site", unresolved, loc)
        if any(loc in s.unresolved for s in sts):  # a stack where it is not confirmed (another width): none
            spec = None
        if spec is not None:
            sites[loc] = spec
            unresolved.pop(loc, None)
    self_module = _merge([s.self_module for s in sts], lays, "their attention module", unresolved, "self_attention")
    if self_module is None:
        self_module = joined_self_attention(sts, lays, unresolved)
    cross_module = _merge([s.cross_module for s in sts], lays, "their cross-attention module", unresolved,
                          "cross_attention")
    registry = all(s.registry for s in sts)
    shapes = set().union(*(s.shapes for s in sts))
    if len(shapes) > 1:
        self_module = cross_module = None
        unresolved["self_attention"] = unresolved["cross_attention"] = (
            f"the attention modules differ in (key/value heads, head dim): {sorted(shapes)}")
    own, attention_shape = None, next(iter(shapes)) if len(shapes) == 1 else None
    if not registry:
        unresolved.setdefault("attention_registry", "the attention does not call transformers' attention "
                                                    "registry (ALL_ATTENTION_FUNCTIONS)")
        if self_module and {"k", "v"} <= set(attention):  # prefix tuning through hooks, where checked
            own, found = stacks_own_attention(model, inputs, sts, lays, self_module, attention, shapes)
        else:
            found = "no single self-attention module with key and value projections was found"
        if own is None:
            unresolved["own_attention"] = found
        else:
            attention_shape = found
    for m in "qkvo":
        if m in attention:
            unresolved.pop(f"attn_{m}", None)
    if intermediate:
        unresolved.pop("intermediate", None)
    if output:
        unresolved.pop("output", None)
    has_cross = [p for p, s in checked.items() if s.cross]
    encoder = next((p for p, s in checked.items() if not s.cross), None) if has_cross else None
    lm_heads = _lm_heads(model, base, [resolve(base, p) for p in checked])
    interface = ModelInterface(
        model_types=(model_type,), embeddings=_embeddings(base, unresolved), layers=tuple(checked), attention=attention,
        intermediate=intermediate, output=output, residual_sites=sites, self_attention=self_module,
        cross_attention=cross_module, encoder_layers=encoder, cross_attention_projections=cross,
        lm_heads=lm_heads, attention_registry=registry, own_attention=own, unresolved=unresolved,
        attention_bias_kwargs=biases,
        hidden_size=None if getattr(config, "hidden_size", None) or getattr(config, "d_model", None) else width,
        attention_shape=attention_shape)
    logger.info("adapterkit inferred this interface for %s (model_type %r); copy it into a file and pass "
                "init(model, interface=INTERFACE) to fix it:\n%s", type(model).__name__, model_type,
                interface.to_source())
    return interface


def _lm_heads(model: nn.Module, base: nn.Module, stacks: list) -> tuple[str, ...]:
    """Paths of the modules holding the output embeddings outside the layer stacks: a task model's head, or, where
    the child holding it also holds layers (an EncoderDecoderModel's decoder), the head inside it (decoder.cls)."""
    heads = []
    for name, module in model.named_children():
        while module is not base and _holds(module, model):
            if not any(s is m for s in stacks for m in module.modules()):
                heads.append(name)
                break
            inner = next(((n, m) for n, m in module.named_children() if _holds(m, model)), None)
            if inner is None:
                break
            name, module = f"{name}.{inner[0]}", inner[1]
    return tuple(heads)


def _holds(module: nn.Module, model: nn.Module) -> bool:
    """Whether `module` is (or holds) the model's output embeddings (its LM head)."""
    try:
        out = model.get_output_embeddings()
    except (NotImplementedError, AttributeError):
        return False
    return out is not None and any(m is out for m in module.modules())


