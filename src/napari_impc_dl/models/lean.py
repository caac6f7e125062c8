"""A leaner U-Net forward for inference: only the wanted window, every decoder block in strips.

In a segmentation-models-pytorch U-Net the memory of a forward peaks in its high-resolution
decoder blocks: the coarser features are upsampled, concatenated with the skip and convolved at
half and full resolution, while every encoder feature map is still held (smp keeps the list
until the decoder returns). That is about 300 bytes per pixel of a tile, so a tile's side, and
with it the halo's share of the work, is bounded by memory. And the tiled engine keeps only each
tile's *core*: the outputs over the halo are computed to be thrown away.

:class:`StripwiseUnet` runs the same modules with the same weights, but

* drops each encoder feature map as soon as the decoder has used it;
* given the window of the tile whose outputs are wanted (``keep``), runs the decoder's
  high-resolution blocks only over that window plus the context they need: the encoder and the
  deep blocks (large receptive field, few pixels) see the whole tile with its halo, the last
  blocks (small receptive field, most of the work) see the core and a few pixels more. The block
  where the cut is made is chosen per call from each block's multiply-adds per pixel and
  receptive field, whichever computes least. On the starter model the last two decoder blocks
  and the head are about three quarters of the forward; they then cover the core plus 8 pixels
  instead of the core plus the engine's 32-pixel halo. Computed windows are rounded to a few
  shapes (:func:`_grow`) so that a run reuses its buffers;
* computes every decoder block (the last one with the head) in horizontal strips of its input,
  each with a margin of rows that covers the block's receptive field, keeping only the strip's
  core.

Why the results are exact: a 3 x 3 convolution with zero padding at a cut changes outputs only
within its reach of the cut, and nearest-neighbour upsampling by exactly 2 maps a row to rows
``2r, 2r + 1``; so outputs farther from a cut than the summed reach of the convolutions after it
(each counted at its own resolution) are those of the whole-tile pass. Cuts are aligned to the
grid of the resolution they are made at. Tests check bit-identity against the plain network.

On the starter model a 1024 x 1024 forward holds 0.44x the tensor bytes of the plain network's
(143 against 325 MB; ``tests/unit/test_fuse.py``); with the cut, a 1408 px tile's forward
computes 7 % fewer multiply-adds. :func:`stripwise` wraps a network only when it has the
expected structure and the wrapped copy reproduces the original's output on a probe, both whole
and cut at every block it may cut at; otherwise the network is returned as it is.
"""

from __future__ import annotations

import logging
import math

from torch import nn

log = logging.getLogger(__name__)

_STRIP_ROWS = 512
"""Full-resolution rows per strip (a block at 1/s resolution computes ``512 / s`` output rows at a time)."""

_QUANTUM = 16
"""Computed windows have sides that are multiples of this (see :func:`_grow`)."""

Window = tuple[int, int, int, int]
"""``(y0, y1, x0, x1)``: rows and columns of a tile, full resolution, ends exclusive."""


class StripwiseUnet(nn.Module):
    """An smp ``Unet`` that computes only a wanted window, each decoder block in strips of rows (module docstring).

    Built from the U-Net's structure (:func:`_plan`; ``ValueError`` if its decoder cannot be cut):

    * ``margins[i]``: input rows of context decoder block ``i`` (the last one with the head) needs
      to compute a strip of its output, or None where the block must run whole;
    * ``reach[i]``: full-resolution pixels of context blocks ``i..`` and the head need together
      (None where the decoder cannot be cut before block ``i``, e.g. attention that pools);
    * ``cost[i]``: multiply-adds per full-resolution pixel of block ``i`` (the last one with the head).
    """

    def __init__(self, unet, rows: int = _STRIP_ROWS, quantum: int = _QUANTUM) -> None:
        super().__init__()
        plan = _plan(unet)
        if plan is None:
            raise ValueError("not an smp U-Net whose decoder can be cut")
        self.unet, self.rows, self.quantum = unet, rows, quantum
        self.margins, self.reach, self.cost = plan

    def forward(self, x, keep: Window | None = None):
        """Outputs of the tile ``x`` ``(B, C, H, W)``; with ``keep``, only that window of them ``(B, K, y1 - y0, x1 - x0)``."""
        H, W = (int(v) for v in x.shape[2:])
        at, win = self.cut(H, W, keep)
        return self.run(x, keep, at, win)

    def cut(self, H: int, W: int, keep: Window | None) -> tuple[int | None, Window]:
        """The decoder block to cut before (None: no cut) and the window computed from there, the cheapest for ``keep``."""
        full = (0, H, 0, W)
        depth = len(self.reach)
        if keep is None or tuple(keep) == full or H % 2**depth or W % 2**depth:
            return None, full
        best = (sum(self.cost) * H * W, None, full)
        for i in range(depth):
            if self.reach[i] is None:
                continue
            g = 2 ** (depth - i)  # block i's input is at 1/g resolution: cut on its grid
            win = _grow(keep, self.reach[i], g, H, W, self.quantum)
            area = (win[1] - win[0]) * (win[3] - win[2])
            cost = sum(self.cost[:i]) * H * W + sum(self.cost[i:]) * area
            if cost < best[0]:
                best = (cost, i, win)
        return best[1], best[2]

    def run(self, x, keep: Window | None, at: int | None, win: Window):
        """The forward with the decoder cut before block ``at`` to ``win`` (``at`` None: the whole tile); returns ``keep``."""
        u = self.unet
        dec = u.decoder
        H, W = (int(v) for v in x.shape[2:])
        features = u.encoder(x)
        shapes = [tuple(int(v) for v in f.shape[2:]) for f in features][::-1]  # deepest first
        maps = features[1:][::-1]  # deepest first; the full-resolution input is never a skip
        del features
        y = dec.center(maps.pop(0))
        skips = maps
        del maps  # each skip is let go once its block has used it
        n = len(dec.blocks)
        Y0, Y1, X0, X1 = (0, H, 0, W) if at is None else win
        for i in range(n):
            s = 2 ** (n - 1 - i)  # block i's output is at 1/s resolution
            if i == at:  # from here on, only the window (on the grid of block i's input, 1/2s), copied: dense in the same layout
                y = _crop(y, (Y0, Y1, X0, X1), 2 * s)
                skips = [None if k is None else _crop(k, (Y0, Y1, X0, X1), 2 ** (n - 1 - j)) for j, k in enumerate(skips, start=i)]
            h, w = ((Y1 - Y0) // s, (X1 - X0) // s) if at is not None and i >= at else shapes[i + 1]
            skip = skips[0] if skips else None
            skips = skips[1:]
            y = self._block(i, y, skip, h, w)
            del skip
        if keep is None:
            return y
        ky0, ky1, kx0, kx1 = keep
        oy, ox = (0, 0) if at is None else (Y0, X0)
        return y[:, :, ky0 - oy : ky1 - oy, kx0 - ox : kx1 - ox]

    def _block(self, i: int, y, skip, h: int, w: int):
        """Decoder block ``i`` (the last one followed by the head) on ``y`` and ``skip``, output ``(B, C, h, w)``, in strips of rows."""
        import torch

        u = self.unet
        block = u.decoder.blocks[i]
        last = i == len(u.decoder.blocks) - 1
        hy = y.shape[2]
        m = self.margins[i]
        if m is None or h != 2 * hy or w != 2 * y.shape[3]:  # not an exact 2x upsampling: whole
            out = block(y, h, w, skip_connection=skip)
            return u.segmentation_head(out) if last else out
        step = max(1, self.rows // (2 ** (len(u.decoder.blocks) - i)))  # input rows per strip
        out = None
        for r0 in range(0, hy, step):
            r1 = min(hy, r0 + step)
            a, b = max(0, r0 - m), min(hy, r1 + m)
            part = block(y[:, :, a:b], 2 * (b - a), w, skip_connection=None if skip is None else skip[:, :, 2 * a : 2 * b])
            if last:
                part = u.segmentation_head(part)
            if out is None:  # in the layout the block computes in, so the next block runs the same kernels
                out = torch.empty((part.shape[0], part.shape[1], h, w), dtype=part.dtype, device=part.device, memory_format=_layout(part))
            out[:, :, 2 * r0 : 2 * r1] = part[:, :, 2 * (r0 - a) : 2 * (r0 - a) + 2 * (r1 - r0)]
            del part
        return out


def _layout(t):
    """``t``'s memory format: channels_last when its channels are innermost, else contiguous."""
    import torch

    return torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() else torch.contiguous_format


def _crop(t, win: Window, scale: int):
    """The window ``win`` (full resolution) of the 1/``scale`` resolution map ``t``, as a dense copy in ``t``'s memory format."""
    y0, y1, x0, x1 = (v // scale for v in win)
    return t[:, :, y0:y1, x0:x1].contiguous(memory_format=_layout(t))


def _grow(keep: Window, reach: int, grid: int, H: int, W: int, quantum: int = 1) -> Window:
    """The window to compute for ``keep``: grown by ``reach`` on every side, on the ``grid``, inside the ``H`` x ``W`` tile.

    Its sides are multiples of ``max(grid, quantum)`` (or the tile's): windows of tiles whose cores
    are about the same size then have exactly the same shape, so a run allocates a handful of
    tensor shapes over and over (buffers reused, kernels set up once) instead of a new one per
    tile. A window reaching past the tile is moved inside rather than cut, which keeps its shape;
    it then still covers ``keep`` with at least ``reach`` of context wherever the tile has it.
    """
    q = max(grid, quantum)

    def axis(a: int, b: int, n: int) -> tuple[int, int]:
        lo, hi = (a - reach) // grid * grid, -(-(b + reach) // grid) * grid
        size = -(-(hi - lo) // q) * q
        if size >= n:
            return 0, n
        lo = min(max(0, lo), (n - size) // grid * grid)  # inside the tile, on the grid
        return lo, lo + size

    (y0, y1), (x0, x1) = axis(keep[0], keep[1], H), axis(keep[2], keep[3], W)
    return y0, y1, x0, x1


def _block_reach(modules, scale: int) -> int | None:
    """Full-resolution pixels of context the convolutions in ``modules`` (run at 1/``scale``) need, or None if they cannot be cut."""
    reach = 0
    for m in modules:
        if isinstance(m, nn.Conv2d):
            if m.stride[0] != 1 or m.stride[1] != 1 or m.padding_mode != "zeros":
                return None
            reach += max((m.kernel_size[0] - 1) // 2 * m.dilation[0], (m.kernel_size[1] - 1) // 2 * m.dilation[1]) * scale
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.UpsamplingBilinear2d)):
            return None  # e.g. scSE attention pools globally: any cut would change it
    return reach


def _block_cost(modules, scale: int) -> float:
    """Multiply-adds per full-resolution pixel of the convolutions in ``modules`` (run at 1/``scale``)."""
    macs = sum(m.in_channels // m.groups * m.out_channels * m.kernel_size[0] * m.kernel_size[1] for m in modules if isinstance(m, nn.Conv2d))
    return macs / scale**2


def _plan(unet) -> tuple[list[int | None], list[int | None], list[float]] | None:
    """``(margins, reach, cost)`` for :class:`StripwiseUnet`, or None if the decoder's structure is not the expected one."""
    blocks, head = list(unet.decoder.blocks), unet.segmentation_head
    if not isinstance(head, nn.Sequential):
        return None
    n = len(blocks)
    head_reach = _block_reach(list(head.modules()), 1)
    if head_reach is None:
        return None
    margins: list[int | None] = [None] * n
    reach: list[int | None] = [None] * n
    cost = [0.0] * n
    after = head_reach  # context needed by everything after block i
    for i in range(n - 1, -1, -1):
        s = 2 ** (n - 1 - i)
        mods = list(blocks[i].modules())
        r = _block_reach(mods, s) if getattr(blocks[i], "interpolation_mode", None) == "nearest" else None
        cost[i] = _block_cost(mods, s) + (_block_cost(list(head.modules()), 1) if i == n - 1 else 0.0)
        if r is not None:
            own = r // s + (head_reach if i == n - 1 else 0)  # output rows of context, at the block's own resolution
            margins[i] = math.ceil(own / 2)  # input rows (upsampled by 2)
        after = None if r is None or after is None else after + r
        reach[i] = after
    if margins[-1] is None:
        return None  # the last stage cannot even run in strips
    return margins, reach, cost


def stripwise(net, in_channels: int, *, side: int = 128, tolerance: float = 1e-5):
    """``net`` wrapped in :class:`StripwiseUnet` when it is an smp U-Net whose decoder can be cut, else ``net``.

    The wrapped network is checked on a ``side`` x ``side`` probe (with strips small enough that
    the probe is cut several times), whole and with a window cut before every block it may cut
    at; any difference beyond ``tolerance`` (relative to the output's range) keeps ``net``.
    """
    import torch

    try:
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
    except ImportError:  # pragma: no cover - smp is a dependency
        return net
    if not isinstance(getattr(net, "decoder", None), UnetDecoder) or getattr(net, "classification_head", None) is not None:
        return net
    try:
        check = StripwiseUnet(net, rows=max(8, side // 4)).eval()
    except ValueError:
        return net
    device = next(net.parameters()).device
    probe = torch.randn(1, in_channels, side, side, generator=torch.Generator().manual_seed(1)).to(device)
    keep = (side // 4 + 3, side // 2 + 5, 1, side - 7)
    from ..devices import exact_math

    with torch.inference_mode(), exact_math():  # the check in fp32, not TF32 (module docstring of devices.exact_math)
        want = net(probe)
        scale = float(want.abs().max()) or 1.0
        errs = [float((check(probe) - want).abs().max()) / scale]
        for i, r in enumerate(check.reach):
            if r is not None:
                win = _grow(keep, r, 2 ** (len(check.reach) - i), side, side)
                got = check.run(probe, keep, i, win)
                want_k = want[:, :, keep[0] : keep[1], keep[2] : keep[3]]
                errs.append(float((got - want_k).abs().max()) / scale if got.shape == want_k.shape else math.inf)
    if not max(errs) <= tolerance:
        log.info("cut or strip-wise decoder changed outputs by %.2g: using the network as it is", max(errs))
        return net
    check.rows = _STRIP_ROWS  # checked with small strips; runs with the default
    return check
