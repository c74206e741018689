"""Prepacked linear weights for CPU decoding (`pack_weights`).

Why: on a CPU, PyTorch's dense fp32 `F.linear` goes to MKL, which takes its fast GEMV path for one token but
repacks the whole weight on every call once two or more tokens come in. A forward of 6 tokens (an SD verify at
gamma 5) then costs about two 1-token steps, which erases what speculation saves. oneDNN can pack each weight once,
at load time, into its blocked layout; with that, a 6-token verify costs about one 1-token step (`make bench`,
section `kernels`; the measurement behind this choice: results/bench/latest.md, section `design`).
Packing every linear beats packing only the large ones: oneDNN's ~15 us per call loses to MKL's GEMV on small
weights at 1 token, but wins at 2+ tokens, and measured whole forwards favour packing all.

How: every `nn.Linear` of a loaded model is swapped, on that model instance, for a `PackedLinear` that holds
the same `weight`/`bias` Parameters (so tied heads stay tied, `state_dict` and readers such as the EAGLE heads
see the dense weights) plus the packed copy that its forward uses. transformers' code is untouched: this is
the module swap that quantization toolkits do. The price is a second copy of every linear weight in memory.
`ar` and every SD method decode with the same models, so speedups compare like with like.
"""
from __future__ import annotations

import torch
from torch import nn

from harness import HarnessError

CHOICES = ("auto", "true", "false")


class PackedLinear(nn.Module):
    """`nn.Linear` whose forward multiplies by a oneDNN-prepacked copy of the weight (inference only)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        # a plain attribute, not a buffer, so state_dict is unchanged; a copy taken now: `weight` must not change
        # afterwards (decoding only; training loads models without packing)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def wanted(setting, device: torch.device, dtype: torch.dtype | None) -> bool | None:
    """Whether to pack: `true` insists, `false` never; `auto` is None (each model decides by measurement,
    harness.kernels) where packing is possible (float32 on a CPU whose PyTorch has oneDNN), else False."""
    choice = str(setting).lower()
    if choice not in CHOICES:
        raise HarnessError(f"pack_weights={setting!r}; valid choices: {', '.join(CHOICES)}")
    usable = device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
    if choice == "true" and not usable:
        raise HarnessError(f"pack_weights=true needs a CPU device, dtype float32 and a PyTorch built with oneDNN "
                           f"(here: device {device}, dtype {dtype}, oneDNN {torch.backends.mkldnn.is_available()}); "
                           "use pack_weights=auto or false")
    if choice == "auto":
        return None if usable else False
    return choice == "true"


def pack_linears(model: nn.Module) -> int:
    """Swap every `nn.Linear` in `model` for a `PackedLinear` in place; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:  # exact type: subclasses may change what forward computes
                setattr(parent, name, PackedLinear(child))
                swapped += 1
    return swapped
