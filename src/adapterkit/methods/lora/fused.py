"""One autograd node for a frozen projection plus one plain LoRA: `y = x W^T + b + s (x A^T) B^T`.

Why: on the hook path (the projection site adding `LoRA.forward` to the projection's output) every LoRA site costs
four autograd nodes (the base addmm, two mm's, the add) and three extra forward kernels. With a frozen base that
work is mostly bookkeeping, and at small batches (GPUs, tiny models) the step is bound by launches and autograd
overhead, not by FLOPs. `FusedLoRA` computes the same thing as one node with a hand-written backward, and allocates
no (tokens, out) intermediate (on CPU at bert-base sizes a fresh large tensor is itself costly):

    forward:  y = x W^T + b;  t = x A^T;  y += s t B^T                               (3 kernels)
    backward: u = g B
              grad_x = g W + s u A            (only if x needs a gradient)
              grad_A = s u^T x,  grad_B = s g^T t   (t saved from the forward: it is (tokens, r), small)

Leading dimensions of x are flattened. W and b get no gradient: the caller (`LinearSite`) takes this path only for
a whole (not fused-slice) nn.Linear / GPT-2 Conv1D whose weight and bias are frozen (`fused_args`), with exactly one ungated LoRA
whose dropout is inactive, and no autocast; everything else stays on the hook path. The backward is made of
differentiable ops on the inputs (t is recomputed when its graph is recorded), so double backward works too.

Without a gradient to compute (no_grad, inference_mode, frozen adapters) the same three kernels run bare: an
autograd.Function costs some microseconds of Python per call, which is all the saving at a tiny site.

Where it runs (FUSED_TRAINING_DEVICES): training on the CPU, and inference (bare kernels) anywhere. On a GPU
a small-batch training step is bound by the host, and there the node's Python backward costs more host time than
the four C++ autograd nodes it replaces, although it launches fewer kernels (677 against 747 per bert-base step).
Under torch.compile neither runs: the compiler gets the plain ops. The measurements behind these choices (GPU
and CPU, the site alone and bert-base steps, the `grad_x = g (W + s B A)` variant) are in BENCHMARKS.md, "The
fused LoRA node".
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D


_FUSABLE = (nn.Linear, Conv1D)
# device types on which a LoRA site that records a graph runs as the fused autograd node
FUSED_TRAINING_DEVICES = ("cpu",)


def fused_args(lora, module: nn.Module, x) -> tuple | None:
    """(weight, bias, A, B, scaling) if `lora` at `module` can run fused: one plain LoRA (no gate, no active
    dropout, no hooks of its own) on a frozen projection (or without grad mode), all of one dtype, no autocast, not
    while torch.compile traces, and where a graph is recorded only on FUSED_TRAINING_DEVICES; else None.

    Parameters are read from the modules' dicts: nn.Module.__getattr__ would cost more than the rest of the check.
    """
    if torch.compiler.is_compiling():
        return None  # the compiler gets the plain ops and fuses them as it sees fit
    # the exact module types whose forward it reproduces (not subclasses: quantised, parametrized, ...)
    if type(module) not in _FUSABLE or lora.gate is not None:
        return None
    if lora._forward_pre_hooks or lora._forward_hooks or lora._backward_hooks or lora._backward_pre_hooks:
        return None  # hooks on the LoRA module itself: it has to be called
    dropout = lora._modules["dropout"]
    if type(dropout) is not nn.Identity and dropout.training and dropout.p > 0:
        return None
    params = module._parameters
    weight, bias = params["weight"], params.get("bias")
    if type(weight) is not nn.Parameter and type(weight) is not torch.Tensor:
        return None  # a tensor-subclass weight (torchao's quantized ones): its own linear kernel
    lora_params = lora._parameters
    a, b = lora_params.get("lora_A"), lora_params.get("lora_B")
    if a is None or b is None or not isinstance(x, torch.Tensor) or x.is_meta:
        return None  # (meta: a model built on the meta device runs the plain ops; autocast knows no meta)
    if "scaling" in lora._buffers:  # a tensor (hotswap.py): read as a number here, a device sync per call
        return None
    if torch.is_grad_enabled():  # (no graph is recorded under no_grad / inference_mode)
        if weight.requires_grad or (bias is not None and bias.requires_grad):
            return None  # trainable base weights
        if x.device.type not in FUSED_TRAINING_DEVICES and (x.requires_grad or a.requires_grad or b.requires_grad):
            return None  # the autograd node pays off on the CPU only ("Where it runs" above)
    if (x.dtype != weight.dtype or a.dtype != weight.dtype or b.dtype != weight.dtype
            or torch.is_autocast_enabled(x.device.type)):
        return None
    return weight, bias, a, b, lora.scaling


def fused_lora(x, weight, bias, lora_a, lora_b, scaling: float, transposed: bool) -> torch.Tensor:
    """`x W^T + b + s (x A^T) B^T`: one autograd node when a gradient is wanted, else the bare kernels (inference
    pays no autograd.Function overhead). `transposed`: the weight is stored (in, out), as GPT-2's Conv1D."""
    if torch.is_grad_enabled() and (x.requires_grad or lora_a.requires_grad or lora_b.requires_grad):
        return FusedLoRA.apply(x, weight, bias, lora_a, lora_b, scaling, transposed)
    return compute(x, weight, bias, lora_a, lora_b, scaling, transposed)[0]


def compute(x, weight, bias, lora_a, lora_b, scaling: float, transposed: bool):
    """The forward's kernels: (y, t = x A^T flattened to (tokens, r))."""
    x2 = x.reshape(-1, x.shape[-1])
    w_t = weight if transposed else weight.t()  # (in, out)
    # written into a fresh tensor of x's leading shape: the output must not be a view (F.linear's can be), or the
    # caller could not modify it in place
    y = x.new_empty(*x.shape[:-1], w_t.shape[1])
    y2 = y.view(-1, w_t.shape[1])
    if bias is None:
        torch.mm(x2, w_t, out=y2)
    else:
        torch.addmm(bias, x2, w_t, out=y2)
    t = torch.nn.functional.linear(x2, lora_a)
    y2.addmm_(t, lora_b.t(), alpha=scaling)
    return y, t


class FusedLoRA(torch.autograd.Function):
    """`apply(x, weight, bias, lora_A, lora_B, scaling, transposed)`; `transposed`: weight stored (in, out)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, transposed: bool):
        y, t = compute(x, weight, bias, lora_a, lora_b, scaling, transposed)
        ctx.save_for_backward(x, weight, lora_a, lora_b, t)
        ctx.scaling, ctx.transposed = scaling, transposed
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_a, lora_b, t = ctx.saved_tensors
        s = ctx.scaling
        x2 = x.reshape(-1, x.shape[-1])
        if torch.is_grad_enabled():  # create_graph=True: t from the inputs, so that this backward is differentiable
            t = torch.nn.functional.linear(x2, lora_a)
        g = grad.reshape(-1, grad.shape[-1])
        u = torch.mm(g, lora_b)  # (tokens, r)
        grad_x = grad_a = grad_b = None
        needs = ctx.needs_input_grad
        if needs[0]:
            # Conv1D: g W^T; nn.Linear: g W
            grad_x = torch.nn.functional.linear(g, weight) if ctx.transposed else torch.mm(g, weight)
            grad_x.addmm_(u, lora_a, alpha=s)
            grad_x = grad_x.view(x.shape)
        # beta=0: the first argument only gives the shape and is ignored
        if needs[3]:
            grad_a = torch.addmm(lora_a, u.t(), x2, beta=0, alpha=s)
        if needs[4]:
            grad_b = torch.addmm(lora_b, g.t(), t, beta=0, alpha=s)
        return grad_x, None, None, grad_a, grad_b, None, None
