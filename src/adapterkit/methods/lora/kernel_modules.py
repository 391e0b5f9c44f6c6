"""LoRA on nn.Embedding and nn.Conv1d / nn.Conv2d, and (IA)^3 on nn.Conv2d, with peft's math and tensor layout
(peft's LoRA targets embeddings and convolutions; its (IA)^3 convolutions only, Conv2d and Conv3d).

- Embedding LoRA: `out + s * B (A[:, ids])`, A (r, num_embeddings) and B (embedding_dim, r), peft's
  `lora_embedding_A` / `lora_embedding_B`; A starts at zeros and B normal (peft's init, the reverse of a Linear's).
  The lookup uses the embedding's padding_idx / max_norm / ... as peft, and an embedding that scales its output
  (`embed_scale`, Gemma's) scales the update too. peft applies no dropout there; neither does this. Merge:
  `W += s (B A)^T`.
- Conv LoRA: A is a convolution to r channels with the target's kernel size, stride and padding, B a 1x1
  convolution back: `out + s * B(A(dropout(x)))`; peft's `lora_A.weight` (r, in, *k) / `lora_B.weight` (out, r,
  1, ...). Merge: `W += s B A` contracted over r (the same function). Grouped, dilated or non-zero-padded
  convolutions are refused (peft's A ignores dilation and the padding mode, so its merge would differ from its
  forward).
- Conv2d (IA)^3: `out * l` per output channel, bias included; a `feedforward_modules` entry scales the input
  channels, `conv(l * x)`; peft's `ia3_l` (1, C, 1, 1).
The modules follow the projection site's protocol (`module(x, out)`, modules.py); they do not route per example.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import AdapterError
from ...nn.dtypes import cast
from ...nn.module_target import KernelTarget
from .config import LoRAConfig
from .modules import _ia3_vector

_CONV = {"conv1d": F.conv1d, "conv2d": F.conv2d}


def check_conv(target: KernelTarget, module_name: str) -> None:
    conv = target.module
    problems = [what for what, bad in (("groups > 1", conv.groups != 1),
                                       ("dilation", any(d != 1 for d in conv.dilation)),
                                       (f"padding_mode={conv.padding_mode!r}", conv.padding_mode != "zeros")) if bad]
    if problems:
        raise AdapterError(f"{module_name} ({type(conv).__name__}) has {', '.join(problems)}: LoRA / (IA)^3 on "
                           "convolutions take plain ones (groups=1, no dilation, zero padding), as peft can merge")


class _Kernel(nn.Module):
    """What the site asks of every module here."""

    gate = None
    run_whole = None

    def routable(self) -> bool:
        return False


class LoRAEmbedding(_Kernel):
    combine = "add"

    def __init__(self, target: KernelTarget, config: LoRAConfig, r: int, alpha: float):
        super().__init__()
        self.__dict__["target"] = target.module
        self.scaling = config.scaling_of(r, alpha)
        self.lora_embedding_A = nn.Parameter(torch.empty(r, target.in_features))
        self.lora_embedding_B = nn.Parameter(torch.empty(target.out_features, r))
        with torch.no_grad():
            if config.init_weights == "bert":
                nn.init.normal_(self.lora_embedding_A, std=0.02)
                nn.init.normal_(self.lora_embedding_B, std=0.02)
            else:  # peft's, whatever its init_lora_weights ("lora", "gaussian"): A zeros, B N(0, 1)
                nn.init.zeros_(self.lora_embedding_A)
                nn.init.normal_(self.lora_embedding_B)

    def delta(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.__dict__["target"]
        after_a = F.embedding(ids, self.lora_embedding_A.T, e.padding_idx, e.max_norm, e.norm_type,
                              e.scale_grad_by_freq, e.sparse)
        delta = (after_a @ self.lora_embedding_B.T) * self.scaling
        scale = getattr(e, "embed_scale", None)
        return delta if scale is None else delta * cast(torch.as_tensor(scale, device=delta.device), delta.dtype)

    def forward(self, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + cast(self.delta(ids), out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_embedding_B @ self.lora_embedding_A).T * self.scaling

    def merge_into(self, target: KernelTarget) -> None:
        weight = target.weight()
        target.set(weight + self.delta_weight().to(weight.dtype))

    def peft_tensors(self) -> dict:
        return {"lora_embedding_A": self.lora_embedding_A.detach(), "lora_embedding_B": self.lora_embedding_B.detach()}


class LoRAConv(_Kernel):
    combine = "add"

    def __init__(self, target: KernelTarget, config: LoRAConfig, r: int, alpha: float):
        super().__init__()
        conv = target.module
        self.__dict__["target"] = conv
        self.conv = _CONV[target.kind]
        self.scaling = config.scaling_of(r, alpha)
        ones = (1,) * len(conv.kernel_size)
        self.lora_A = nn.Parameter(torch.empty(r, target.in_features, *conv.kernel_size))
        self.lora_B = nn.Parameter(torch.empty(target.out_features, r, *ones))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        with torch.no_grad():
            if config.init_weights == "bert":
                nn.init.normal_(self.lora_A, std=0.02)
                nn.init.normal_(self.lora_B, std=0.02)
            elif config.init_weights == "gaussian":
                nn.init.normal_(self.lora_A, std=1 / r)
                nn.init.zeros_(self.lora_B)
            else:  # "lora": peft's, A as a conv's default init, B zeros
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
                nn.init.zeros_(self.lora_B)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.__dict__["target"]
        dtype = self.lora_A.dtype
        h = self.conv(self.dropout(cast(x, dtype)), self.lora_A, None, conv.stride, conv.padding)
        return cast(self.conv(h, self.lora_B) * self.scaling, x.dtype)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + cast(self.delta(x), out.dtype)

    def delta_weight(self) -> torch.Tensor:
        shape = (self.lora_B.shape[0], *self.lora_A.shape[1:])
        return (self.lora_B.flatten(1) @ self.lora_A.flatten(1)).view(shape) * self.scaling

    def merge_into(self, target: KernelTarget) -> None:
        weight = target.weight()
        target.set(weight + self.delta_weight().to(weight.dtype))

    def peft_tensors(self) -> dict:
        return {"lora_A.weight": self.lora_A.detach(), "lora_B.weight": self.lora_B.detach()}


class IA3Conv(_Kernel):
    """(IA)^3 on a Conv2d: its output channels scaled (bias included), or with `feedforward` its input channels."""

    def __init__(self, target: KernelTarget, config: LoRAConfig, feedforward: bool):
        super().__init__()
        self.__dict__["target"] = target.module
        self.feedforward = feedforward
        self.combine = None if feedforward else "scale"
        self.scaling = config.scaling
        self.ia3_l = _ia3_vector(target.in_features if feedforward else target.out_features, config)

    def vector(self) -> torch.Tensor:
        return self.ia3_l if self.scaling == 1.0 else self.ia3_l * self.scaling

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        """The vector shaped to scale dim 1 of x, (1, C, 1, 1)."""
        return cast(self.vector(), x.dtype).view(1, -1, *([1] * (x.dim() - 2)))

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return self._channels(x)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if not self.feedforward:
            return out * self._channels(out)
        conv = self.__dict__["target"]  # W (l x) + b = out + W ((l - 1) x)
        weight = cast(conv.weight, x.dtype)
        return out + F.conv2d(x * (self._channels(x) - 1), weight, None, conv.stride, conv.padding, conv.dilation,
                              conv.groups)

    def merge_into(self, target: KernelTarget) -> None:
        v, weight, bias = self.vector().detach(), target.weight(), target.bias()
        if self.feedforward:
            target.set(weight * v.to(weight.dtype).view(1, -1, 1, 1))
        else:
            target.set(weight * v.to(weight.dtype).view(-1, 1, 1, 1), None if bias is None else bias * v.to(bias.dtype))

    def peft_tensors(self) -> dict:
        return {"ia3_l": self.vector().detach().view(1, -1, 1, 1)}
