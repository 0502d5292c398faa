import pytest
import torch
import torch.nn.functional as F

from probe.config import ConfigError
from probe.geometry import Geometry
from probe.models import build_model
from probe.models.conv import local_dense
from probe.tasks import Task


def fake_task(channels, spatial, periodic=False, n_out=3, n=16):
    geo = Geometry(channels, spatial, periodic)
    x = torch.randn(n, geo.n_inputs)
    y = torch.randint(0, n_out, (n,))
    return Task("fake", x, y, x, y, geometry=geo, n_outputs=n_out)


def first_layer_output(net, x):
    """The model's own first layer applied to flat inputs, flattened channel-major, bias removed."""
    first = net.layers[0]
    h = first(x.reshape(len(x), *net.geometry.input_shape))
    b = first.bias.detach()
    b = b[:, None].expand(b.shape[0], h[0, 0].numel()) if b.dim() == 1 else b
    return (h - b.reshape(b.shape[0], *h.shape[2:])).flatten(1)


GRIDS = [(1, (40,), False), (2, (17,), True), (3, (8, 8), False), (2, (6, 7), True)]


@pytest.mark.parametrize("model", ["cnn", "lcn"])
@pytest.mark.parametrize("channels,spatial,periodic", GRIDS)
@pytest.mark.parametrize("kernel,stride", [(3, 1), (5, 2)])
def test_dense_first_layer_equals_the_models_own_first_layer(model, channels, spatial, periodic, kernel, stride):
    task = fake_task(channels, spatial, periodic)
    net = build_model(model, task, 0, 0, "standard", {"channels": 4, "kernel": kernel, "stride": stride, "layers": 2})
    M = net.first_layer_dense()
    x = torch.randn(5, task.geometry.n_inputs)
    torch.testing.assert_close(x @ M.T, first_layer_output(net, x), atol=1e-5, rtol=1e-5)


def test_conv_dense_matches_conv1d_with_circular_padding_on_a_small_grid():
    # kernel larger than the grid: offsets wrap onto the same pixel and must add up
    w = torch.randn(2, 1, 5)
    x = torch.randn(3, 1, 4)
    M = local_dense(w.unsqueeze(1).expand(2, 4, 1, 5), (4,), 1, 2, True)
    ref = F.conv1d(F.pad(x, (2, 2), mode="circular"), w).flatten(1)
    torch.testing.assert_close(x.flatten(1) @ M.T, ref, atol=1e-5, rtol=1e-5)


def test_cnn_shares_weights_and_lcn_does_not():
    task = fake_task(1, (20,))
    opts = {"channels": 2, "kernel": 3, "stride": 1, "layers": 1}
    for name, shared in (("cnn", True), ("lcn", False)):
        M = build_model(name, task, 0, 0, "standard", opts).first_layer_dense()
        # unit (o, p) and (o, p+1) of a conv are the same filter shifted by one pixel
        same = torch.allclose(torch.roll(M[3], 1), M[4])
        assert same == shared, name


def test_mlp_shape_depth_and_dense_first_layer():
    task = fake_task(1, (40,), n_out=10)
    net = build_model("mlp", task, 100, 2)
    assert [tuple(p.shape) for p in net.parameters() if p.dim() == 2] == [(100, 40), (100, 100), (10, 100)]
    assert torch.equal(net.first_layer_dense(), net.layers[0].weight)
    lin = build_model("linear", task, 100, 2)
    assert lin.first_layer_dense().shape == (10, 40)


def test_mean_field_scales_the_readout_and_sgd_learning_rates_by_width():
    task = fake_task(1, (10,))
    torch.manual_seed(0)
    net = build_model("mlp", task, 64, 1, "mean-field")
    x = torch.randn(4, 10)
    h = torch.relu(net.layers[0](x))
    torch.testing.assert_close(net(x), net.readout(h) / 64)
    assert net.readout.weight.std() > 0.5  # readout weights O(1) in mean-field
    assert set(net.lr_multipliers("sgd").values()) == {64.0}
    assert net.lr_multipliers("adam") == {}
    assert build_model("mlp", task, 64, 1, "standard").lr_multipliers("sgd") == {}


def test_bottleneck_mlp_is_residual_with_layernorm():
    task = fake_task(1, (12,))
    net = build_model("mlp", task, 16, 3, "standard", {"arch": "bottleneck", "expansion": 2})
    assert len(net.blocks) == 3 and net.blocks[0][1].out_features == 32
    assert net(torch.randn(5, 12)).shape == (5, 3)
    assert net.first_layer_dense().shape == (16, 12)


def test_unknown_model_and_options_are_refused():
    task = fake_task(1, (12,))
    with pytest.raises(ConfigError, match="valid models: .*cnn"):
        build_model("resnet", task, 8, 1)
    with pytest.raises(ConfigError, match="valid options: .*kernel"):
        build_model("cnn", task, 8, 1, "standard", {"kernal": 3})
    with pytest.raises(ConfigError, match="activation"):
        build_model("mlp", task, 8, 1, "standard", {"activation": "swishy"})
