"""The mechanism instruments on constructions whose answer is known exactly: each fooling construction reads the
fooling value on the old instrument (asserted, so the reproduction is checked) and the right value on the new one
(probe/metrics/step.py, probe/metrics/intervention.py)."""

import numpy as np
import pytest
import torch

from probe.geometry import Geometry
from probe.metrics import arith, recurrence
from probe.metrics.equivariance import conv_layout, conv_subspace_distance, conv_subspace_projection
from probe.metrics.intervention import (clone_discriminator, recurrence_iv_measures, relevant_grad_share,
                                        relevant_iv_share)
from probe.metrics.locality import window_mass
from probe.metrics.pull import com_share, com_windows, shared_chance, subspace_shares
from probe.metrics.step import (directional_change, local_conv_share_null, parallel_share, realized_change,
                                step_pull, subspace_step)

GEO = Geometry(1, (40,))


def _bump_fields(m=16, seed=0, tail=0.15):
    """m units on 40 pixels: a Gaussian bump of width 1.5 at a random centre, plus broad tails of size ``tail``."""
    rng = np.random.default_rng(seed)
    s = np.arange(40)
    c = rng.integers(8, 32, m)
    W = np.exp(-((s[None] - c[:, None]) ** 2) / (2 * 1.5**2)) * rng.choice([-1, 1], (m, 1))
    return W + tail * rng.standard_normal((m, 40))


def _window_mask(W, k=3):
    start = com_windows(W, GEO, k)[:, 0]
    mask = np.zeros_like(W, dtype=bool)
    for i, a in enumerate(start):
        mask[i, a : a + k] = True
    return mask


def S_wm(M):
    return window_mass(M, GEO, 3)


# -- (a) the pull along the step -----------------------------------------------------------------------------------
def test_a_step_that_prunes_the_tails_reads_as_a_pull_toward_locality():
    """The old instrument: grad_com_share_3 = 0.000 for this gradient (all its energy outside each unit's window),
    read as "no pull", though a descent step raises window mass."""
    W = _bump_fields()
    G = np.where(_window_mask(W), 0.0, W)  # the gradient of sum of squared tails: descent prunes them
    assert com_share(G, W, GEO, 3) == pytest.approx(0.0, abs=1e-12)  # the fooling value
    r = step_pull(S_wm, W, -0.05 * G, draws=20, seed=0)
    assert r["dS"] > 0
    assert r["dS"] - r["dS@random"] > 3 * r["dS@random_sd"]
    assert r["dS"] - r["dS@units"] > 3 * r["dS@units_sd"]
    real = S_wm(W - 0.05 * G) - S_wm(W)
    assert real > 0 and r["dS"] == pytest.approx(real, rel=0.2)


def test_a_step_that_shrinks_the_core_reads_as_a_push_away():
    """The old instrument: grad_com_share_3 = 1.000 (all the energy inside each unit's window), read as the
    strongest pull, though a descent step lowers window mass."""
    W = _bump_fields()
    G = np.where(_window_mask(W), W, 0.0)
    assert com_share(G, W, GEO, 3) == pytest.approx(1.0, abs=1e-12)  # the fooling value
    r = step_pull(S_wm, W, -0.05 * G, draws=20, seed=0)
    assert r["dS"] < 0
    assert r["dS@random"] - r["dS"] > 3 * r["dS@random_sd"]


def test_a_step_that_rescales_each_field_changes_no_scale_free_measure():
    """Most of the MLP's "pull" at 10^5 examples was parallel to each unit's own weights: a rescaling of the
    existing field, which the energy share counted in full. Along the step it reads 0 and the step reports its
    parallel share (1 here)."""
    W = _bump_fields()
    D = 0.1 * W * np.random.default_rng(3).uniform(0.5, 2, (len(W), 1))
    r = step_pull(S_wm, W, D, draws=5)
    assert r["dS"] == pytest.approx(0.0, abs=1e-8)
    assert r["step_parallel_share"] == pytest.approx(1.0, abs=1e-12)
    assert parallel_share(W, np.random.default_rng(4).standard_normal(W.shape)) < 0.1


def test_the_step_read_is_the_optimizers_not_the_gradient():
    """Under Adam the first step is about -lr sign(G): here the gradient would shrink the core (lower window mass),
    Adam's step moves every entry by lr and so, relative to their size, the small tails most (raising it). The
    instrument reads the applied step D = W_after - W_before, and its first-order value matches the change."""
    W = _bump_fields(tail=0.05)
    G = np.where(_window_mask(W), W, 0.01 * W)  # mostly on the core
    p = torch.nn.Parameter(torch.tensor(W))
    opt = torch.optim.Adam([p], lr=1e-3)
    p.grad = torch.tensor(G)
    opt.step()
    D = p.detach().numpy() - W
    along_grad = directional_change(S_wm, W, -G)
    r = step_pull(S_wm, W, D, draws=20)
    assert along_grad < 0 < r["dS"]
    assert r["dS"] == pytest.approx(S_wm(W + D) - S_wm(W), rel=0.2)
    rc = realized_change(S_wm, W, W + D, draws=20)
    assert rc["dS_k"] > rc["dS_k@random"] + 3 * rc["dS_k@random_sd"]


# -- (b) conv_share and local_share, signed ------------------------------------------------------------------------
def test_the_subspace_step_tells_in_from_out():
    """The old instrument: a gradient that pulls weights back into the convolutional subspace and its negative,
    which pushes them out, have identical conv_share and local_share (energy is sign-blind)."""
    index = conv_layout(GEO, 4, 5)
    rng = np.random.default_rng(0)
    C = conv_subspace_projection(rng.standard_normal(index.shape), index)
    O = rng.standard_normal(index.shape)
    O -= conv_subspace_projection(O, index)
    W = C + 0.6 * O * np.linalg.norm(C) / np.linalg.norm(O)
    G_in, G_out = O, -O  # descent along -G: removes the off part, or adds to it
    assert subspace_shares(G_in, index) == subspace_shares(G_out, index)  # the fooling reading
    lr = 0.05 * np.linalg.norm(W) / np.linalg.norm(O)
    d_in = subspace_step(W, -lr * G_in, index, draws=20)
    d_out = subspace_step(W, -lr * G_out, index, draws=20)
    assert conv_subspace_distance(W - lr * G_in, index) < conv_subspace_distance(W, index)
    assert d_in["conv_dist_change"] < d_in["conv_dist_change@random"] - 5 * d_in["conv_dist_change@random_sd"]
    assert d_out["conv_dist_change"] > d_out["conv_dist_change@random"] + 5 * d_out["conv_dist_change@random_sd"]
    assert d_in["conv_dist_change"] == pytest.approx(-d_out["conv_dist_change"], rel=1e-3)


# -- (c) @local computed --------------------------------------------------------------------------------------------
def test_local_null_is_computed_not_scaled_on_a_zero_padded_layout():
    """The old @local (local_share x dim_conv / dim_local) assumes every entry of the windows holds the same
    energy and every tap as many entries. With zero padding the outer taps are held by fewer entries (here 5 of 8
    positions for a kernel of 7, against 8 for the centre tap); a local, unshared matrix whose energy sits on the
    outer taps has a conv_share (averaged over draws) 1.24 times the scaled null, as if partly shared. The computed
    null (random signs on the windows' entries) matches that Monte Carlo. On MNIST-1D's layouts (40 positions,
    kernel 5: 38 to 40 entries per tap) the two nulls agree within a few percent; a single draw's spread (sd about
    15% of the mean there) is larger than their difference."""
    geo = Geometry(1, (8,))
    index = conv_layout(geo, 2, 7)  # open grid, zero padding 3
    rng = np.random.default_rng(0)
    held = index >= 0
    tap = np.where(held, index % 7, -1)
    scale = np.where((tap == 0) | (tap == 6), 10.0, 1.0)
    mc, scaled = [], []
    for _ in range(400):
        M = np.where(held, rng.standard_normal(index.shape) * scale, 0.0)
        sh = subspace_shares(M, index)
        mc.append(sh["conv_share"])
        scaled.append(shared_chance(sh, index))
    M = np.where(held, rng.standard_normal(index.shape) * scale, 0.0)
    computed = local_conv_share_null(M, index)
    assert computed == pytest.approx(np.mean(mc), rel=0.1)
    assert np.mean(mc) > 1.15 * np.mean(scaled)  # the scaled null misreads this local, unshared matrix
    # on evenly spread energy in MNIST-1D's layout the two agree
    index = conv_layout(GEO, 4, 5)
    R = np.where(index >= 0, rng.standard_normal(index.shape), 0.0)
    assert local_conv_share_null(R, index) == pytest.approx(shared_chance(subspace_shares(R, index), index), rel=0.05)
    # and a convolution is far above its computed null
    Cv = conv_subspace_projection(rng.standard_normal(index.shape), index)
    assert subspace_shares(Cv, index)["conv_share"] > 10 * local_conv_share_null(Cv, index)


# -- (d) recurrence by intervention ---------------------------------------------------------------------------------
T = 12


def _onehot(ids, V):
    return torch.nn.functional.one_hot(torch.as_tensor(ids).long(), V).double()


def _classes(value, K, sharp=20.0):
    """Logits over K classes peaked at an integer-valued tensor (B, T): -sharp (k - value)^2."""
    k = torch.arange(K, dtype=torch.float64)
    return -sharp * (k - value[..., None]) ** 2


def counter(x):  # x one-hot (B, T, 2): the count of token 1 so far, classes 0..T
    return _classes(torch.cumsum(x[..., 1], 1), T + 1)


def dyck_depth(x):  # token 0 = "(", 1 = ")": depth so far, shifted by T
    return _classes(torch.cumsum(x[..., 0] - x[..., 1], 1) + T, 2 * T + 1)


def parity(x):  # running parity of token 1, through its count: cos(pi count) = +-1 at every integer count
    c = torch.cumsum(x[..., 1], 1)
    return torch.stack([torch.cos(np.pi * c), -torch.cos(np.pi * c)], -1) * 10


DELAY, V = 2, 4


def shift_register(x):  # answer at t: the token at t - DELAY (class V: nothing yet)
    prev = torch.cat([torch.zeros_like(x[:, :DELAY]), x[:, :-DELAY]], 1)
    blank = torch.cat([torch.ones_like(x[:, :DELAY, :1]), torch.zeros_like(x[:, DELAY:, :1])], 1)
    return 10 * torch.cat([prev, blank], -1)


_R = torch.tensor(np.random.default_rng(5).standard_normal((T, V, V + 1)))


def random_copy(x):  # the token at t - DELAY through a different random matrix at every position
    prev = torch.cat([torch.zeros_like(x[:, :DELAY]), x[:, :-DELAY]], 1)
    return 10 * torch.einsum("btv,tvk->btk", prev, _R.to(x.dtype))


def counter_plus_future_length(x):  # the count, plus a term in the number of future positions (sum of one-hots)
    fut = torch.flip(torch.cumsum(torch.flip(x.sum(-1), [1]), 1), [1]) - x.sum(-1)
    return _classes(torch.cumsum(x[..., 1], 1), T + 1, sharp=1.0) + 3 * fut[..., None] * torch.linspace(
        -1, 1, T + 1, dtype=torch.float64)


def counter_step_future(x):  # the count, plus 1 when the next token is 1 (through a step: zero gradient)
    nxt = torch.cat([x[:, 1:, 1], torch.zeros_like(x[:, :1, 1])], 1)
    return _classes(torch.cumsum(x[..., 1], 1) + (nxt > 0.5).double(), T + 1)


def _ids(V_, n=128, seed=0):
    return torch.randint(0, V_, (n, T), generator=torch.Generator().manual_seed(seed))


def _iv(model, V_):
    return recurrence_iv_measures(lambda ids: model(_onehot(ids, V_)), _ids(V_), V_, seed=0)


def _old(model, V_):
    ids = _ids(V_, n=64)
    x = _onehot(ids, V_)
    y = model(x).argmax(-1)
    M = recurrence.dependence_map(model, x, y)
    return recurrence.time_sharing(M), recurrence.permuted_nulls(M)["time_sharing"], recurrence.causal_mass(M)


@pytest.mark.parametrize("model, V_", [(counter, 2), (dyck_depth, 2), (parity, 2), (shift_register, V)])
def test_exact_recurrent_solutions_read_as_time_shared(model, V_):
    """Old instrument (gradient energy map): the exact counter read time_sharing 0.208 against its null 0.121,
    the exact Dyck depth counter 0.014 (below its null): exact recurrences read as not time-shared."""
    r = _iv(model, V_)
    assert r["causal_mass_iv"] == pytest.approx(1.0, abs=1e-9)
    assert r["time_sharing_iv"] == pytest.approx(1.0, abs=1e-9)
    if model is not parity:  # two answers: any change flips the answer, so its relabeled null is 1 as well
        assert r["time_sharing_iv"] - r["time_sharing_iv@permuted"] > 5 * max(r["time_sharing_iv_permuted_sd"], 0.01)


def test_the_exact_counter_fooled_the_gradient_map():
    ts, null, _ = _old(counter, 2)
    assert ts < 0.5  # the old reading: an exact counter far from time-shared


def test_a_per_position_random_solution_of_delayed_copy_is_not_time_shared():
    """Old instrument: delayed copy through a different random matrix at every position read time_sharing 0.955
    (its dependence magnitudes sit at lag DELAY, Toeplitz by construction)."""
    ts, _, _ = _old(random_copy, V)
    assert ts > 0.8  # the fooling value (0.87 on this construction)
    r = _iv(random_copy, V)
    assert r["time_sharing_iv"] < 0.9  # exact recurrences read 1
    # read against its null, (share - null) / (1 - null) is 1 for every exact recurrence above and here 0.38:
    # with 5 answers and 12 positions some positions' random maps agree by chance, so it stays above 0
    null = r["time_sharing_iv@permuted"]
    assert (r["time_sharing_iv"] - null) / (1 - null) < 0.5


def test_dependence_on_the_future_is_read_by_substitution():
    """Old causal_mass: a counter plus a term in the number of future positions (the constant-on-one-hot
    direction: no substitution changes it) read 0.741; a dependence on the next token through a step function
    (zero gradient) read 1.000."""
    _, _, cm_len = _old(counter_plus_future_length, 2)
    _, _, cm_step = _old(counter_step_future, 2)
    assert cm_len < 0.95 and cm_step == pytest.approx(1.0)  # the fooling values
    assert _iv(counter_plus_future_length, 2)["causal_mass_iv"] == pytest.approx(1.0, abs=1e-9)
    assert _iv(counter_step_future, 2)["causal_mass_iv"] < 0.95


def test_a_constant_map_leaves_the_measures_out():
    """Old causal_mass: a map constant up to float32 rounding returned a number (0.244), not undefined."""
    const = lambda x: (1e-9 * x.sum(-1, keepdim=True) + torch.zeros(*x.shape[:2], 3, dtype=torch.float64)).float()
    r = recurrence_iv_measures(lambda ids: const(_onehot(ids, 2)), _ids(2), 2)
    assert r == {}


# -- (e) relevant inputs by function -------------------------------------------------------------------------------
def test_relevant_inputs_read_by_function_not_weights():
    """Old relevant_weight_mass: an exact adder plus 510 dead units with large weights on the other inputs read
    0.001; a first layer on x0, x1 computing x0 - x1 (the wrong rule) read 1.000, as the right rule does."""
    D, rng = 20, np.random.default_rng(0)
    W = np.zeros((512, D))
    W[0, :2], W[1, :2] = 1.0, -1.0
    W[2:, 2:] = 3 * rng.standard_normal((510, D - 2))
    b = np.r_[0.0, 0.0, -1e4 * np.ones(510)]  # dead units
    a = np.r_[1.0, -1.0, rng.standard_normal(510)]
    Wt, bt, at = (torch.tensor(v) for v in (W, b, a))
    adder = lambda x: torch.relu(x @ Wt.T + bt) @ at  # relu(s) - relu(-s) = s = x0 + x1
    x = torch.tensor(rng.standard_normal((256, D)))
    assert arith.relevant_weight_mass(W, [0, 1]) < 0.01  # the fooling value
    assert relevant_grad_share(adder, x, [0, 1]) == pytest.approx(1.0, abs=1e-12)
    assert relevant_iv_share(adder, x, [0, 1]) == pytest.approx(1.0, abs=1e-12)
    wrong = lambda x: x[:, 0] - x[:, 1]
    assert relevant_grad_share(wrong, x, [0, 1]) == pytest.approx(1.0)  # right inputs, wrong rule:
    y = (x[:, 0] + x[:, 1]).numpy()
    assert arith.rel_mse(wrong(x).numpy(), y) > 0.5  # which rel_mse shows
    spread = lambda x: x.sum(1)
    assert relevant_iv_share(spread, x, [0, 1]) == pytest.approx(2 / D, rel=0.3)


def test_a_step_function_dependence_is_seen_by_intervention_only():
    x = torch.tensor(np.random.default_rng(1).standard_normal((256, 6)))
    f = lambda x: x[:, 0] + x[:, 1] + (x[:, 4] > 0).double() * 3
    assert relevant_grad_share(f, x, [0, 1]) == pytest.approx(1.0)
    assert relevant_iv_share(f, x, [0, 1]) < 0.7


# -- (f) how far off the data the clone lies -----------------------------------------------------------------------
def test_the_discriminator_tells_a_non_gaussian_set_from_its_clone_and_not_a_gaussian_one():
    rng = np.random.default_rng(0)
    n, d = 1000, 20
    pos = rng.integers(0, d, n)
    real = np.zeros((n, d))
    real[np.arange(n), pos] = 3.0  # one bump per input: far from Gaussian
    real += 0.1 * rng.standard_normal((n, d))
    clone = rng.multivariate_normal(real.mean(0), np.cov(real.T), n)
    assert clone_discriminator(real, clone) > 0.85
    g = rng.multivariate_normal(np.zeros(d), np.eye(d) + 0.5, n)
    gc = rng.multivariate_normal(g.mean(0), np.cov(g.T), n)
    assert clone_discriminator(g, gc) < 0.62


# -- a CNN's dense gradient at a stationary point -------------------------------------------------------------------
def test_a_cnns_conv_share_is_its_kernel_gradient_and_vanishes_where_that_does():
    """Old reading: the CNN's dense gradient had a random direction's conv_share at the last step, read as "the
    CNN's structure does not come from its gradient". The convolutional part of a CNN's dense gradient G is
    exactly its kernel gradient (each tap's sum of G over the entries holding it), so it vanishes as the CNN
    converges, whatever the loss asks of an MLP there; the review found conv_share 0.14-0.36 from step 3 to 405,
    chance only at the last step (gradient norm 2e-4). The instruments that read the step report the norms
    beside every value."""
    from probe.metrics.pull import first_layer_gradient
    from probe.models.conv import LocalNet
    from probe.models.conv import conv_layouts

    torch.manual_seed(0)
    geo = Geometry(1, (20,))
    cnn = LocalNet(geo, 3, channels=2, kernel=3, layers=1, stride=1, shared=True)
    x, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
    G = first_layer_gradient(cnn, x, y, "ce").double().numpy()
    index = conv_layout(*conv_layouts(cnn)[0])
    held = index >= 0
    tap_sums = np.bincount(index[held], weights=G[held], minlength=int(index.max()) + 1)
    cnn.zero_grad()
    torch.nn.functional.cross_entropy(cnn(x), y).backward()
    kernel_grad = cnn.layers[0].weight.grad.double().numpy().reshape(-1)
    assert np.allclose(tap_sums, kernel_grad, atol=1e-6)
    # at a kernel-stationary point (kernel gradient 0) the conv share is 0 whatever G's size off the subspace
    G_stat = G - conv_subspace_projection(G, index)
    assert subspace_shares(G_stat, index)["conv_share"] == pytest.approx(0.0, abs=1e-12)


def test_the_cnn_discriminator_tells_a_within_class_local_structure_from_its_clone_and_not_a_gaussian_one():
    # per class c, one bump at a random position among the positions of c's half of the grid: a within-class,
    # local, non-Gaussian structure, and the class-conditional Gaussian clone of it; and a Gaussian "real" set whose
    # clone is the same distribution, where no discriminator can do better than chance
    from probe.metrics.intervention import clone_discriminator_cnn

    rng = np.random.default_rng(0)
    d, k = 24, 2

    def bumps(n):
        y = rng.integers(0, k, n)
        x = 0.1 * rng.standard_normal((n, d))
        x[np.arange(n), y * (d // 2) + rng.integers(0, d // 2, n)] += 3.0
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def clone_of(x, y):
        stats = {c: (x[y == c].double().mean(0), torch.cov(x[y == c].double().T)) for c in range(k)}

        def draw(labels, g):
            out = torch.empty(len(labels), d)
            for c in range(k):
                m = labels == c
                mu, cov = stats[c]
                z = torch.randn(int(m.sum()), d, generator=g, dtype=torch.float64)
                L = torch.linalg.cholesky(cov + 1e-6 * torch.eye(d, dtype=torch.float64))
                out[m] = (mu + z @ L.T).float()
            return out
        return draw

    xtr, ytr = bumps(1000)
    xte, yte = bumps(400)
    assert clone_discriminator_cnn(xtr, ytr, xte, yte, clone_of(xtr, ytr), k, steps=400) > 0.9
    g = lambda n: (torch.randn(n, d), torch.tensor(rng.integers(0, k, n)))
    (gtr, gytr), (gte, gyte) = g(1000), g(400)
    gauss = lambda labels, gen: torch.randn(len(labels), d, generator=gen)  # the clone of a standard Gaussian
    assert abs(clone_discriminator_cnn(gtr, gytr, gte, gyte, gauss, k, steps=400) - 0.5) < 0.08
