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

    assert _n_norms(starter._fused) == 0 and _n_norms(starter.net) > 0
    x = torch.rand(1, 1, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = starter.forward(x)
        want = starter.net(x).sigmoid()
    assert float((got - want).abs().max()) < 1e-4
    p8 = lambda t: np.rint(t.numpy() * 255)  # noqa: E731  quantised as the engine stores probabilities
    assert np.abs(p8(got) - p8(want)).max() <= 1
