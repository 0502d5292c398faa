import numpy as np
import pytest

from probe.geometry import Geometry


@pytest.mark.parametrize("geo", [Geometry(1, (40,)), Geometry(3, (4, 5)),
                                 Geometry(7, (6,), channels_last=True, kind="sequence")])
def test_fields_round_trip(geo):
    W = np.random.default_rng(0).normal(size=(5, geo.n_inputs))
    F = geo.fields(W)
    assert F.shape == (5, geo.channels, *geo.spatial)
    np.testing.assert_array_equal(geo.flatten_fields(F), W)


def test_fields_follow_pytorch_channel_major_layout():
    geo = Geometry(3, (4, 5))
    x = np.arange(60.0)
    F = geo.fields(x[None])
    np.testing.assert_array_equal(F[0], x.reshape(3, 4, 5))


def test_channels_last_layout_puts_features_of_a_position_together():
    geo = Geometry(4, (6,), channels_last=True, kind="sequence")
    x = np.arange(24.0)
    F = geo.fields(x[None])
    np.testing.assert_array_equal(F[0], x.reshape(6, 4).T)


def test_unpermute_undoes_the_input_shuffle():
    rng = np.random.default_rng(1)
    geo = Geometry(2, (10,))
    W = rng.normal(size=(3, geo.n_inputs))
    perm = rng.permutation(10)
    # the shuffled model sees x_seen[c, s] = x[c, perm[s]]; weights that compute the same function:
    W_seen = geo.fields(W)[:, :, perm].reshape(3, -1)
    x = rng.normal(size=(2, 10))
    x_seen = x[:, perm]
    np.testing.assert_allclose(W_seen @ x_seen.ravel(), W @ x.ravel())
    np.testing.assert_allclose(geo.permuted(perm).fields(W_seen), geo.fields(W))


def test_dict_round_trip_and_shape_parsing():
    geo = Geometry(3, (32, 32), periodic=True, perm=tuple(reversed(range(1024))))
    assert Geometry.from_dict(geo.to_dict()) == geo
    assert Geometry.from_shape([1, 40]) == Geometry(1, (40,))
    with pytest.raises(ValueError, match="C,L or C,H,W"):
        Geometry.from_shape([40])


def test_weights_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="do not fit input geometry"):
        Geometry(1, (40,)).fields(np.zeros((4, 39)))
    with pytest.raises(ValueError, match="permutation"):
        Geometry(1, (4,), perm=(0, 0, 1, 2))
