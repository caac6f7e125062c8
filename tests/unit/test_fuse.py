"""BatchNorm folding (models/fuse.py): same outputs, fewer layers, the trained network untouched."""

import numpy as np
import pytest


def _n_norms(net):
    from torch import nn

    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("encoder", ["tiny", "mobilenetv3-minimal", "resnet18"])
def test_folded_network_gives_the_same_outputs(encoder):
    import torch

    from napari_impc_dl.models import registry
    from napari_impc_dl.models.fuse import fuse_batchnorm

    torch.manual_seed(1)
    net = registry.build(registry.architecture(encoder, in_channels=2)).eval()
    with torch.no_grad():  # non-trivial statistics, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = fuse_batchnorm(net, 2)
    assert fused is not net and _n_norms(net) > 0 and _n_norms(fused) == 0
    x = torch.randn(1, 2, 96, 160)
    with torch.inference_mode():
        a, b = net(x), fused(x)
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # checkpoints and export see the trained net


def test_a_convolution_read_twice_is_not_folded():
    """conv -> BN and the same conv output added back later: folding would change the sum, so nothing is folded."""
    import torch
    from torch import nn

    from napari_impc_dl.models.fuse import fuse_batchnorm

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Conv2d(4, 1, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.head(self.bn(y) + y)

    net = Skip().eval()
    with torch.no_grad():
        net.bn.running_mean.fill_(0.7)
        net.bn.running_var.fill_(3.0)
    assert fuse_batchnorm(net, 1) is net


def test_checkpoint_model_runs_the_folded_copy(starter):
    import torch

    assert _n_norms(starter._inference) == 0 and _n_norms(starter.net) > 0
    x = torch.rand(1, 1, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = starter.forward(x)
        want = starter.net(x).sigmoid()
    assert float((got - want).abs().max()) < 1e-4
    p8 = lambda t: np.rint(t.numpy() * 255)  # noqa: E731  quantised as the engine stores probabilities
    assert np.abs(p8(got) - p8(want)).max() <= 1


@pytest.mark.parametrize("encoder", ["tiny", "mobilenetv3-minimal", "resnet18"])
def test_decoder_blocks_in_strips_are_exact(encoder):
    """Every decoder block computed in strips of rows gives bit-identical outputs, for any tile shape and strip height."""
    import torch

    from napari_impc_dl.models import registry
    from napari_impc_dl.models.lean import StripwiseUnet, stripwise

    torch.manual_seed(2)
    net = registry.build(registry.architecture(encoder, in_channels=1)).eval()
    lean = stripwise(net, 1)
    assert isinstance(lean, StripwiseUnet) and all(m is not None and m >= 1 for m in lean.margins)
    x = torch.randn(2, 1, 224, 96)  # taller than wide, batch of two
    with torch.inference_mode():
        want = net(x)
        for rows in (2, 7, 64, 1000):  # strips of every size (full-resolution rows), the last one short
            assert torch.equal(StripwiseUnet(net, rows=rows)(x), want)


@pytest.mark.parametrize("encoder", ["tiny", "mobilenetv3-minimal", "resnet18"])
def test_a_window_cut_at_any_block_is_exact(encoder):
    """Outputs over a window, with the decoder cut before any block it can be cut at, equal the whole tile's, bit for bit."""
    import torch

    from napari_impc_dl.models import registry
    from napari_impc_dl.models.lean import _grow, stripwise

    torch.manual_seed(3)
    net = registry.build(registry.architecture(encoder, in_channels=1)).eval()
    lean = stripwise(net, 1)
    n = len(net.decoder.blocks)
    assert all(r is not None for r in lean.reach) and lean.reach == sorted(lean.reach, reverse=True)
    x = torch.randn(2, 1, 160, 224)
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        want = net(x)
        for _ in range(4):
            y0, x0 = int(rng.integers(0, 150)), int(rng.integers(0, 200))
            keep = (y0, int(rng.integers(y0 + 1, 161)), x0, int(rng.integers(x0 + 1, 225)))
            ref = want[:, :, keep[0] : keep[1], keep[2] : keep[3]]
            for i in range(n):
                got = lean.run(x, keep, i, _grow(keep, lean.reach[i], 2 ** (n - i), 160, 224))
                assert torch.equal(got, ref), (keep, i)
            assert torch.equal(lean(x, keep=keep), ref)  # the cut it picks itself


def test_the_cut_computes_less_for_a_tiles_core():
    """With a 32-pixel halo, the starter architecture cuts before its half-resolution block and computes 8 pixels around the core."""
    from napari_impc_dl.models import registry
    from napari_impc_dl.models.lean import stripwise

    lean = stripwise(registry.build(registry.architecture("mobilenetv3-minimal", in_channels=1)).eval(), 1)
    at, win = lean.cut(1072, 1072, (32, 1040, 32, 1040))
    assert at == 1 and win == (24, 1048, 24, 1048)
    assert lean.cut(1072, 1072, (0, 1072, 0, 1072)) == (None, (0, 1072, 0, 1072))  # the whole tile: no cut
    assert lean.cut(1072, 1072, None)[0] is None


def test_stripwise_refuses_networks_it_cannot_cut():
    import segmentation_models_pytorch as smp

    from napari_impc_dl.models.lean import stripwise

    kw = dict(encoder_name="resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), in_channels=1, classes=2)
    scse = smp.Unet(decoder_attention_type="scse", **kw).eval()  # attention pools over the whole map
    assert stripwise(scse, 1) is scse
    up = smp.Unet(**kw).eval()
    up.decoder.blocks[-1].interpolation_mode = "bilinear"  # rows of a bilinear upsampling depend on their neighbours
    assert stripwise(up, 1) is up
    fpn = smp.FPN(encoder_name="resnet18", encoder_weights=None, in_channels=1, classes=1).eval()
    assert stripwise(fpn, 1) is fpn


def _peak_tensor_bytes(net, x) -> int:
    """Most bytes held at once by tensors the forward creates (tracked per storage, op by op; deterministic)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Live(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.refs, self.size, self.now, self.peak = {}, {}, 0, 0

        def _drop(self, key):
            self.refs[key] -= 1
            if not self.refs[key]:
                self.now -= self.size.pop(key)
                del self.refs[key]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.data_ptr() != x.data_ptr():
                    key = t.untyped_storage().data_ptr()
                    if key not in self.refs:
                        self.refs[key], self.size[key] = 0, t.untyped_storage().nbytes()
                        self.now += self.size[key]
                        self.peak = max(self.peak, self.now)
                    self.refs[key] += 1
                    weakref.finalize(t, self._drop, key)
            return out

    mode = Live()
    with torch.inference_mode(), mode:
        y = net(x)
    del y
    return mode.peak


def test_inference_copy_needs_less_memory_per_tile(starter):
    """At its peak, a 1024 x 1024 forward of the inference copy holds at most 0.55x the tensor bytes of the trained network's (measured: 143 vs 325 MB)."""
    import torch

    x = torch.rand(1, 1, 1024, 1024).contiguous(memory_format=torch.channels_last)
    plain, lean = _peak_tensor_bytes(starter.net, x), _peak_tensor_bytes(starter._inference, x)
    assert plain > 1024 * 1024 * 32 * 4 and lean < 0.55 * plain, (plain, lean)
