"""Tiling and filter match (probe/metrics/tiling.py) on constructions whose answer is known exactly: bumps that
tile the grid, one bump copied to every unit, a CNN's own filters placed in an MLP's fields."""

import numpy as np
import pytest
import torch

from probe.geometry import Geometry
from probe.analysis.load import cnn_filters
from probe.metrics.tiling import filter_match, tiling

G40 = Geometry(channels=1, spatial=(40,), periodic=True)
X = np.arange(40)


def bump(c, w=1.5):
    d = (X - c + 20) % 40 - 20
    return np.exp(-0.5 * (d / w) ** 2)


def test_exactly_tiled_bumps_tile_perfectly_and_beat_random_centres():
    W = np.stack([bump(c) for c in range(40)])  # one bump centred at every position of a periodic grid
    t = tiling(W, G40)
    assert t["tiling"] == pytest.approx(1.0, abs=1e-12)
    assert t["tiling@random"] < 0.9  # the same bumps at random centres pile up somewhere
    g2 = Geometry(1, (12, 12), periodic=True)
    assert tiling(np.eye(144), g2)["tiling"] == pytest.approx(1.0)  # one pixel at each place of a 2-D grid


def test_one_bump_copied_to_every_unit_is_the_least_even_and_below_its_null():
    W = np.stack([bump(7)] * 10)
    t = tiling(W, G40)
    p = bump(7) ** 2 / (bump(7) ** 2).sum()
    assert t["tiling"] == pytest.approx(1 - 0.5 * np.abs(p - 1 / 40).sum())  # the single field's own evenness
    assert t["tiling"] < 0.2 < t["tiling@random"]
    assert tiling(np.stack([np.eye(40)[3]] * 5), G40)["tiling"] == pytest.approx(1 / 40)  # one pixel: 1/|S|
    # the same bumps spread evenly (every 4 pixels) lie between the copied ones and the perfect tiling
    spread = tiling(np.stack([bump(c) for c in range(0, 40, 4)]), G40)
    assert t["tiling"] < spread["tiling@random"] < spread["tiling"] < 1


def test_no_tiling_to_read_without_localized_units():
    W = np.random.default_rng(0).standard_normal((30, 40))  # no unit holds half its energy in 5 pixels
    assert all(np.isnan(v) for v in tiling(W, G40).values())


def test_a_cnns_own_filters_match_exactly_and_random_fields_at_their_null():
    torch.manual_seed(0)
    F = torch.nn.Conv1d(1, 8, 5).weight.detach().numpy()  # (8, 1, 5)
    W = np.zeros((16, 40))
    for i in range(16):  # filter i % 8 placed at 3i
        W[i, 3 * i % 36: 3 * i % 36 + 5] = F[i % 8, 0]
    m = filter_match(W, G40, F)
    assert m["filter_match"] == pytest.approx(1.0, abs=1e-12)
    assert m["filter_match@phase"] < 0.7  # their phase-randomized fields do not
    assert filter_match(-W, G40, F)["filter_match"] < 1  # signed: a negated filter is another unit
    rand = filter_match(np.random.default_rng(1).standard_normal((50, 40)), G40, F)
    assert abs(rand["filter_match"] - rand["filter_match@phase"]) < 0.05  # random fields read at their null
    # energy outside the filter's window lowers the match: half the energy spread over the grid
    noisy = W + np.random.default_rng(2).standard_normal(W.shape) * np.linalg.norm(W, axis=1, keepdims=True) / 40**0.5
    assert 0.5 < filter_match(noisy, G40, F)["filter_match"] < 0.85


def test_filter_match_on_an_open_grid_places_filters_only_where_they_fit():
    g = Geometry(1, (40,), periodic=False)
    F = np.array([[1.0, -1.0, 0.5]])
    W = np.zeros((2, 40))
    W[0, 37:40] = F[0]  # at the right edge: fits
    W[1, [39, 0, 1]] = F[0]  # wrapping around: not a placement on an open grid
    assert filter_match(W[:1], g, F)["filter_match"] == pytest.approx(1.0)
    assert filter_match(W[1:], g, F)["filter_match"] < 0.9
    assert filter_match(W[1:], G40, F)["filter_match"] == pytest.approx(1.0)  # periodic: it is one
    with pytest.raises(ValueError, match="do not fit"):
        filter_match(W, g, np.ones((2, 1, 41)))


def test_cnn_filters_reads_a_cnn_runs_first_convolution(tmp_path):
    from probe.run.checkpoint import save_checkpoint

    with pytest.raises(ValueError, match="no checkpoints"):
        cnn_filters(tmp_path)
    conv = torch.nn.Conv1d(1, 4, 5)
    state = {"net.0.weight": conv.weight.detach().clone(), "net.0.bias": conv.bias.detach().clone(),
             "head.weight": torch.zeros(10, 8)}
    (tmp_path / "checkpoints").mkdir()
    save_checkpoint(tmp_path / "checkpoints" / "step_100.pt", model="cnn", state_dict=state, step=100)
    np.testing.assert_allclose(cnn_filters(tmp_path), conv.weight.detach().double().numpy())
    save_checkpoint(tmp_path / "checkpoints" / "step_200.pt", model="mlp", state_dict={"l.weight": torch.zeros(10, 8)},
                    step=200)
    with pytest.raises(ValueError, match="not a CNN run"):
        cnn_filters(tmp_path)
