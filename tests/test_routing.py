import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probe.geometry import Geometry
from probe.metrics import routing as R
from probe.models import build_model
from probe.models.tokens import TokenMLP, shared_table_dense
from probe.tasks import Task, make_task




def seq_geometry(C, T):
    return Geometry(channels=C, spatial=(T,), channels_last=True, kind="sequence")


def blocks_to_W(B):
    """(m, T, C) blocks -> W (m, T*C) in the position-major layout."""
    return B.reshape(B.shape[0], -1)


# -- weights ---------------------------------------------------------------------------------------------------
def test_position_ipr_is_one_for_single_position_units_and_one_over_T_for_flat_ones():
    rng = np.random.default_rng(0)
    T, C, m = 6, 5, 12
    geo = seq_geometry(C, T)
    B = np.zeros((m, T, C))
    B[np.arange(m), np.arange(m) % T] = rng.normal(size=(m, C))
    assert R.position_ipr(blocks_to_W(B), geo) == pytest.approx(1.0)
    flat = np.tile(rng.normal(size=(m, 1, C)), (1, T, 1))
    assert R.position_ipr(blocks_to_W(flat), geo) == pytest.approx(1 / T)


def test_position_ipr_of_random_gaussian_weights_is_near_its_reference():
    geo = seq_geometry(8, 16)
    W = np.random.default_rng(1).normal(size=(4000, geo.n_inputs))
    assert R.position_ipr(W, geo) == pytest.approx(R.position_ipr_random(geo), rel=0.05)


def test_position_sharing_is_one_for_a_shared_projection_and_r_over_C_at_random():
    rng = np.random.default_rng(0)
    T, C, r = 5, 32, 4
    geo = seq_geometry(C, T)
    P = rng.normal(size=(r, C))  # one projection read at every position, mixed differently per position
    shared = np.stack([rng.normal(size=(64, r)) @ P for _ in range(T)], axis=1)
    assert R.position_sharing(blocks_to_W(shared), geo, r=r) == pytest.approx(1.0)
    table = shared_table_dense(torch.randn(C, 8), T).numpy()  # a transformer's token table
    assert R.position_sharing(table, geo, r=r) == pytest.approx(1.0)
    rand = R.position_sharing(rng.normal(size=(256, T * C)), geo, r=r)
    assert rand == pytest.approx(R.position_sharing_random(geo, r), abs=0.05)


# -- hand-built routing networks -----------------------------------------------------------------------------
def copy_position_task(T=8, C=6, n=64, s=3):
    x = torch.randint(0, C, (n, T), generator=torch.Generator().manual_seed(0))
    y = x[:, s].clone()
    extras = {"source_test": torch.full((n,), s), "replace_tokens": torch.arange(C)}
    return Task("copy3", x, y, x, y, geometry=seq_geometry(C, T), n_outputs=C, vocab=C,
                info={"answer_at_source": True}, extras=extras)


def copy_position_mlp(T=8, C=6, s=3):
    """One hidden ReLU layer whose units read only position s: logits = relu(4 x_s), argmax = the token at s."""
    net = TokenMLP(T, C, C, False, C, 1)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.mlp.layers[0].weight[:, s * C : (s + 1) * C] = 4 * torch.eye(C)
        net.mlp.readout.weight.copy_(torch.eye(C))
    return net


def test_hand_built_network_copying_position_3_routes_from_3_with_a_static_map():
    task = copy_position_task()
    m = R.sequence_measures(copy_position_mlp(), task, n=64)
    assert m["routing_accuracy"] == 1.0
    assert m["input_dependence"] == pytest.approx(0.0, abs=1e-12)
    assert m["intervention_follow"] == 1.0
    assert m["position_ipr"] == pytest.approx(1.0)


def test_a_pointer_network_routes_by_content_and_its_map_depends_on_the_input():
    """logits = x_{p} where p, the token at position 0, points to the position to copy."""
    T, C, n = 6, 6, 200
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, C, (n, T), generator=g)
    x[:, 0] = torch.randint(1, T, (n,), generator=g)

    def f(h):  # h (B, T, C) one-hot
        return torch.einsum("bs,bsc->bc", h[:, 0, :T], h)

    maps = R.jacobian_maps(f, F.one_hot(x, C).float(), x.gather(1, x[:, :1])[:, 0], x[:, 0], query_pos=0)
    assert R.routing_accuracy(maps) == 1.0
    assert R.input_dependence(maps) > 0.6  # a static map would score 0


def test_reverse_by_hand_shows_the_anti_diagonal():
    L, C = 4, 5
    T = 2 * L
    net = TokenMLP(T, C, C, True, 1, 0)  # depth 0: one linear map
    with torch.no_grad():
        W = torch.zeros(T, C, T, C)
        for i in range(L):
            W[L + i, :, L - 1 - i, :] = torch.eye(C)
        net.mlp.readout.weight.copy_(W.reshape(T * C, T * C))
        net.mlp.readout.bias.zero_()
    task = make_task("reverse", {"vocab": C, "length": L, "n_test": 50}, seed=0)
    m = R.sequence_measures(net, task, n=50)
    assert m["routing_accuracy"] == 1.0 and m["intervention_follow"] == 1.0
    maps = R.jacobian_maps(net, F.one_hot(task.x_test, C).float(), task.y_test, task.extras["source_test"])
    M = R.mean_routing_map(maps, T)
    assert [int(np.argmax(M[L + i])) for i in range(L)] == list(range(L - 1, -1, -1))


def hand_set_reverse_transformer(task):
    """One attention layer whose query at position t attends to position T - 1 - t: positions are orthonormal
    vectors e_t, tokens live in other dimensions, W_q maps e_t to 20 e_{T-1-t} and W_k keeps e_t."""
    T, C = task.geometry.spatial[0], task.vocab
    d = T + C
    net = build_model("transformer", task, d, 1, "standard", {"heads": 1, "causal": False})
    with torch.no_grad():
        net.pos.copy_(torch.eye(T, d))
        net.embed.copy_(torch.eye(T + C)[T:])  # token c -> e_{T + c}
        Wq, Wk, _ = net.blocks[0].attn.qkv.weight.chunk(3)
        Wq.zero_(), Wk.zero_()
        for t in range(T):
            Wq[T - 1 - t, t] = 20.0
            Wk[t, t] = 1.0
        net.blocks[0].attn.qkv.bias.zero_()
    return net


def test_transformer_with_attention_set_by_hand_onto_the_source_scores_one():
    task = make_task("reverse", {"vocab": 6, "length": 4, "n_test": 64}, seed=0)
    torch.manual_seed(0)
    m = R.sequence_measures(hand_set_reverse_transformer(task), task, n=64)
    assert m["attn_routing_accuracy"] == 1.0 and m["attn_layer"] == 0.0
    torch.manual_seed(0)
    untrained = R.sequence_measures(build_model("transformer", task, 10, 1, "standard", {"causal": False}), task, n=64)
    assert untrained["attn_routing_accuracy"] < 0.6


def test_permuting_hidden_units_changes_no_measure():
    task = make_task("mqar", {"n_train": 16, "n_test": 64}, seed=0)
    torch.manual_seed(0)
    net = build_model("mlp", task, 32, 2, "standard", {})
    perm = torch.randperm(32)
    other = build_model("mlp", task, 32, 2, "standard", {})
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        first, second = other.mlp.layers[0], other.mlp.layers[1]
        first.weight.copy_(first.weight[perm]), first.bias.copy_(first.bias[perm])
        second.weight.copy_(second.weight[:, perm])
    assert not torch.equal(net.first_layer_dense(), other.first_layer_dense())
    a, b = R.sequence_measures(net, task, n=64), R.sequence_measures(other, task, n=64)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k


# -- the pieces against independent references -------------------------------------------------------------------
def test_jacobian_maps_match_autograd_jacobian():
    task = make_task("mqar", {"vocab": 8, "pairs": 2, "length": 6, "n_test": 3}, seed=0)
    torch.manual_seed(0)
    net = build_model("transformer", task, 8, 1, "standard", {"heads": 2}).eval()
    x = F.one_hot(task.x_test, 8).float()
    maps = R.jacobian_maps(net, x, task.y_test)
    for i, (b, q) in enumerate(zip(maps.example, maps.out_pos)):
        J = torch.autograd.functional.jacobian(lambda h, b=b, q=q: net(h[None])[0, q, task.y_test[b, q]], x[b])
        np.testing.assert_allclose(maps.A[i], J.norm(dim=-1).numpy(), rtol=1e-4, atol=1e-7)


def test_perm_equivariance_is_zero_for_a_bag_of_blocks_and_not_for_a_positional_model():
    task = make_task("mqar", {"n_test": 32}, seed=0)
    blocks = task.extras["blocks"]

    def bag(x):  # reads key-value pairs as an unordered sum; queries by position
        h = F.one_hot(x, 64).float()
        pairs = h[:, blocks[:, 0]].transpose(1, 2) @ h[:, blocks[:, 1]]  # (B, V, V) key -> value table
        return torch.einsum("btk,bkv->btv", h, pairs)

    g = torch.Generator().manual_seed(0)
    assert R.perm_equivariance(bag, task.x_test, task.y_test, blocks, g)["perm_equivariance_error"] == pytest.approx(0)
    torch.manual_seed(0)
    mlp = build_model("mlp", task, 16, 1, "standard", {})
    assert R.perm_equivariance(mlp, task.x_test, task.y_test, blocks, g)["perm_equivariance_error"] > 0.01


def test_perm_equivariance_of_in_context_examples_is_zero_for_a_mean_over_the_context():
    task = make_task("icl-regression", {"dim": 3, "context": 6, "n_test": 16}, seed=0)
    x = task.x_test.reshape(16, 7, 4)

    def mean_context(h):  # (B, T, C) -> (B, 1): reads the context as a set, the query by position
        h = h.reshape(len(h), 7, 4)
        return ((h[:, :-1, :3] * h[:, :-1, 3:]).mean(1) * h[:, -1, :3]).sum(1, keepdim=True)

    res = R.perm_equivariance(mean_context, x, task.y_test, task.extras["blocks"], torch.Generator().manual_seed(0))
    assert res["perm_equivariance_error"] == pytest.approx(0, abs=1e-10)
    last_example = lambda h: h.reshape(len(h), 7, 4)[:, -2, 3:]  # noqa: E731
    res = R.perm_equivariance(last_example, x, task.y_test, task.extras["blocks"], torch.Generator().manual_seed(0))
    assert res["perm_equivariance_error"] > 0.5


def test_intervention_follow_is_at_chance_for_a_model_that_ignores_the_source():
    task = copy_position_task()
    maps = R.jacobian_maps(copy_position_mlp(s=5), F.one_hot(task.x_test, 6).float(), task.y_test,
                           task.extras["source_test"])
    assert R.routing_accuracy(maps) == 0.0
    follow = R.intervention_follow(copy_position_mlp(s=5), task.x_test, maps, torch.arange(6))
    assert follow < 0.3  # only chance: the new token happens to be the one at position 5 (about 1 in 6)


def test_fourier_power_finds_the_frequency_of_cosine_rows():
    p, k = 31, 7
    a = np.arange(p)
    M = np.stack([np.cos(2 * np.pi * k * a / p + ph) for ph in np.linspace(0, 3, 10)])
    freqs, share = R.key_frequencies(R.fourier_power(M, p), 1)
    assert freqs == [k] and share == pytest.approx(1.0)
    assert R.fourier_peak_share(M, p) == pytest.approx(1.0)
    noise = np.random.default_rng(0).normal(size=(4000, p))
    assert R.key_frequencies(R.fourier_power(noise, p), 3)[1] == pytest.approx(3 / 15, abs=0.03)
    assert R.fourier_peak_share(noise, p) == pytest.approx(R.fourier_peak_random(p), rel=0.03)


@pytest.mark.parametrize("name,opts", [("mqar", {"n_test": 32}), ("induction", {"n_test": 32}),
                                       ("sort", {"n_test": 32}), ("icl-regression", {"n_test": 32}),
                                       ("modadd", {"p": 13}), ("parity", {"n_test": 32})])
@pytest.mark.parametrize("model", ["mlp", "transformer", "mixer"])
def test_sequence_measures_give_finite_floats_for_every_task_and_model(name, opts, model):
    task = make_task(name, opts, seed=0)
    torch.manual_seed(0)
    net = build_model(model, task, 16, 1, "standard", {})
    m = R.sequence_measures(net, task, n=32)
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values()), m
    assert {"position_ipr", "position_sharing", "input_dependence"} <= set(m)
    # every null or chance level is stored one way, X@kind beside its measure X
    nulls = [k for k in m if "@" in k]
    assert {"position_ipr@gaussian", "position_sharing@gaussian"} <= set(nulls)
    assert all(k.split("@")[0] in m for k in nulls) and not [k for k in m if k.endswith("_random")], m
    assert ("routing_accuracy" in m) == ("source_test" in task.extras)
    assert ("attn_input_dependence" in m) == (model == "transformer")
    assert ("attn_routing_accuracy" in m) == (model == "transformer" and "source_test" in task.extras)
    assert ("embed_freq_1" in m and "neuron_freq_1" in m) == (name == "modadd")
    assert ("routing_accuracy_value" in m) == (name in ("mqar", "induction"))  # a source with a key before it
    assert ({"swap_follow", "swap_follow_keys", "swap_follow_values"} <= set(m)) == (name == "mqar")


# -- associative recall: the source is the key and its value ------------------------------------------------
class MQARSolver(torch.nn.Module):
    """A hand-built associative-recall solver with a known Jacobian: at every position t,
    logits_t[c] = sum_j (x_t . x_{k_j})^2 x_{v_j}[c], k_j = 2j the keys and v_j = 2j + 1 the values. At a query
    asking key a (distinct keys, one-hot tokens) the correct logit r = (x_q . x_{k_a})^2 (x_{v_a} . e_y) has
    ||dr/dx_{k_a}|| = 2, ||dr/dx_{v_a}|| = 1 and ||dr/dx_q|| = 2 (the read position), 0 elsewhere."""

    def __init__(self, pairs, vocab):
        super().__init__()
        self.pairs, self.vocab = pairs, vocab

    def forward(self, x):
        h = F.one_hot(x, self.vocab).double() if not x.is_floating_point() else x
        keys, vals = h[:, 0 : 2 * self.pairs : 2], h[:, 1 : 2 * self.pairs : 2]
        match = torch.einsum("btc,bjc->btj", h, keys) ** 2
        return torch.einsum("btj,bjc->btc", match, vals)


def mqar_maps(f, task, n=64, value_only_offset=False):
    x, y, src = task.x_test[:n], task.y_test[:n], task.extras["source_test"][:n]
    off = None if value_only_offset else task.info["source_key_offset"]
    return x, R.jacobian_maps(f, F.one_hot(x, task.vocab).double(), y, src, None, off)


def test_hand_built_mqar_solver_routes_through_the_key_and_its_value():
    task = make_task("mqar", {"pairs": 4, "length": 16, "n_test": 64}, seed=0)
    f = MQARSolver(4, task.vocab)
    x, maps = mqar_maps(f, task)
    assert (f(x).argmax(-1)[task.y_test[:64] != -100] == task.y_test[:64][task.y_test[:64] != -100]).all()
    # the known Jacobian: 2 on the matching key, 1 on its value, 2 on the query itself, 0 elsewhere
    i = np.arange(len(maps.A))
    np.testing.assert_allclose(maps.A[i, maps.key], 2.0)
    np.testing.assert_allclose(maps.A[i, maps.source], 1.0)
    np.testing.assert_allclose(maps.A[i, maps.read], 2.0)
    assert np.isclose(maps.A, 0).sum(1).min() == 16 - 3
    # so the map points at the key: on the pair the routing is exact, on the value alone it is never found
    assert R.routing_accuracy(maps) == 1.0
    assert R.routing_accuracy(maps, value_only=True) == 0.0
    assert R.intervention_follow(f, x, maps, task.extras["replace_tokens"], torch.Generator().manual_seed(0)) == 1.0
    swaps = R.swap_follow(f, x, maps, task.extras["blocks"], torch.Generator().manual_seed(0))
    assert swaps == {"swap_follow_keys": 1.0, "swap_follow_values": 1.0, "swap_follow": 1.0}


def test_models_that_ignore_the_context_or_read_fixed_positions_do_not_follow_swaps():
    task = make_task("mqar", {"pairs": 4, "length": 16, "n_test": 256}, seed=1)
    x, maps = mqar_maps(MQARSolver(4, task.vocab), task, n=256)
    g = torch.Generator().manual_seed(0)

    def constant(z):
        return torch.zeros(*z.shape[:2], task.vocab).index_fill_(2, torch.tensor([0]), 1.0)  # a key, never a value

    assert R.swap_follow(constant, x, maps, task.extras["blocks"], g)["swap_follow"] == 0.0

    def first_value(z):  # answers the value at position 1 whatever is asked: a static map
        return F.one_hot(z[:, 1:2].expand(-1, z.shape[1]), task.vocab).float()

    # it "follows" only where its fixed answer happens to be the other pair's value: at the guessing rate 1/pairs
    out = R.swap_follow(first_value, x, maps, task.extras["blocks"], g)
    assert out["swap_follow_keys"] == pytest.approx(0.25, abs=0.06)
    assert out["swap_follow_values"] == pytest.approx(0.25, abs=0.06)


def test_the_modadd_grid_is_rebuilt_from_the_tasks_own_splits_in_row_order():
    from probe.tasks.sequences import all_pairs

    p = 7
    task = make_task("modadd", {"p": p, "train_frac": 0.3}, seed=1)
    assert torch.equal(R._all_pairs(task, p), all_pairs(p)[0])  # row a * p + b, whatever the split
    task.x_test = task.x_test[1:]  # a pair missing: no grid to read the neurons over
    with pytest.raises(ValueError, match="each of the 7 x 7 pairs once"):
        R._all_pairs(task, p)
