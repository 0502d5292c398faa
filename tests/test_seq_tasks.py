import pytest
import torch

from probe.config import ConfigError
from probe.tasks import make_task, task_specs

SMALL = {
    "mqar": {"n_train": 64, "n_test": 32},
    "induction": {"n_train": 64, "n_test": 32},
    "copy": {"n_train": 64, "n_test": 32},
    "reverse": {"n_train": 64, "n_test": 32},
    "sort": {"n_train": 64, "n_test": 32},
    "icl-regression": {"n_train": 64, "n_test": 32},
    "modadd": {"p": 11},
    "parity": {"n_train": 64, "n_test": 32},
}


def test_every_sequence_task_is_registered_as_a_sequence_task():
    specs = task_specs()
    assert all(specs[name].kind == "sequence" for name in SMALL)


@pytest.mark.parametrize("name", list(SMALL))
def test_sequence_task_shapes_dtypes_and_geometry(name):
    t = make_task(name, SMALL[name], seed=0)
    geo = t.geometry
    assert geo.kind == "sequence" and geo.channels_last and geo.ndim == 1
    T = geo.spatial[0]
    if t.vocab is not None:
        assert t.x_train.dtype == torch.long and t.x_train.shape[1] == T and geo.channels == t.vocab
        assert 0 <= int(t.x_train.min()) and int(t.x_train.max()) < t.vocab
    else:
        assert t.x_train.dtype == torch.float32 and t.x_train.shape[1] == geo.n_inputs
    if t.loss == "ce":
        asked = t.y_test[t.y_test != -100]
        assert asked.numel() and 0 <= int(asked.min()) and int(asked.max()) < t.n_outputs
    if "source_test" in t.extras:
        assert t.extras["source_test"].shape == t.y_test.shape


@pytest.mark.parametrize("name", list(SMALL))
def test_sequence_task_is_deterministic_under_its_seed_and_changes_with_it(name):
    a, b, c = (make_task(name, SMALL[name], seed=s) for s in (3, 3, 4))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_test, c.x_test) or not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", [n for n in SMALL if n != "modadd"])
def test_fresh_batches_are_a_pure_function_of_seed_and_step(name):
    t = make_task(name, {**SMALL[name], "fresh": True}, seed=0)
    x1, y1 = t.sampler(0, 5, 16, "cpu")
    x2, y2 = t.sampler(0, 5, 16, "cpu")
    x3, _ = t.sampler(0, 6, 16, "cpu")
    x4, _ = t.sampler(1, 5, 16, "cpu")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
    assert x1.shape[1:] == t.x_train.shape[1:] and y1.shape[1:] == t.y_train.shape[1:]


@pytest.mark.parametrize("name", ["mqar", "induction", "copy", "reverse", "sort"])
def test_every_answer_is_the_token_at_its_source(name):
    t = make_task(name, SMALL[name], seed=1)
    y, src = t.y_test, t.extras["source_test"]
    asked = y != -100
    assert torch.equal(asked, src >= 0)
    x_at = t.x_test.gather(-1, src.clamp(min=0)) if y.dim() == 2 else t.x_test.gather(1, src[:, None])[:, 0]
    assert torch.equal(x_at[asked], y[asked])


def test_mqar_keys_and_values_come_from_disjoint_halves_and_queries_ask_earlier_keys():
    V, P = 64, 4
    t = make_task("mqar", {"vocab": V, "pairs": P, "length": 16, "n_test": 200}, seed=0)
    x, y, src = t.x_test, t.y_test, t.extras["source_test"]
    keys, vals = x[:, 0 : 2 * P : 2], x[:, 1 : 2 * P : 2]
    assert int(keys.max()) < V // 2 <= int(vals.min())
    assert all(len(set(r.tolist())) == P for r in keys)  # distinct keys: every query has one answer
    q = x[:, 2 * P :]
    assert bool((q[:, :, None] == keys[:, None, :]).any(-1).all())  # every query is an earlier key
    # the key just before the answer's source is the query itself
    assert torch.equal(x.gather(1, (src[:, 2 * P :] - 1)), q)
    assert bool((y[:, : 2 * P] == -100).all())


def test_induction_fixed_offset_is_a_static_source_and_random_offset_is_not():
    fixed = make_task("induction", {"length": 24, "prefix": 8, "fixed_offset": 20, "n_test": 100}, seed=0)
    assert set(fixed.extras["source_test"].tolist()) == {4}
    rand = make_task("induction", {"length": 24, "prefix": 8, "n_test": 100}, seed=0)
    src = rand.extras["source_test"]
    assert len(set(src.tolist())) > 3
    x = rand.x_test
    for i in range(10):  # the sequence ends with the first src tokens repeated
        m = int(src[i])
        assert torch.equal(x[i, -m:], x[i, :m])


def test_reverse_and_copy_sources_are_the_anti_diagonal_and_the_diagonal():
    L = 5
    rev = make_task("reverse", {"length": L, "n_test": 4}, seed=0).extras["source_test"][0]
    cop = make_task("copy", {"length": L, "n_test": 4}, seed=0).extras["source_test"][0]
    assert rev[L:].tolist() == list(range(L - 1, -1, -1)) and cop[L:].tolist() == list(range(L))


def test_sort_targets_are_sorted():
    t = make_task("sort", SMALL["sort"], seed=0)
    out = t.y_test[:, t.geometry.spatial[0] // 2 :]
    assert bool((out[:, 1:] > out[:, :-1]).all())


def test_icl_ridge_reference_beats_predicting_zero_and_is_near_zero_without_noise():
    t = make_task("icl-regression", {"n_test": 200}, seed=0)
    assert t.info["ridge_mse"] < 0.1 * t.info["zero_mse"]
    clean = make_task("icl-regression", {"n_test": 200, "noise": 0.0}, seed=0)
    assert clean.info["ridge_mse"] < 1e-6


def test_modadd_splits_all_pairs_into_disjoint_train_and_test():
    p = 11
    t = make_task("modadd", {"p": p, "train_frac": 0.5}, seed=0)
    rows = {tuple(r) for r in torch.cat([t.x_train, t.x_test]).tolist()}
    assert len(rows) == p * p == len(t.x_train) + len(t.x_test)
    assert len(t.x_train) == round(0.5 * p * p)
    assert torch.equal(t.y_train, (t.x_train[:, 0] + t.x_train[:, 1]) % p)


def test_parity_label_is_the_xor_of_the_stored_bits():
    t = make_task("parity", SMALL["parity"], seed=2)
    rel = t.info["relevant"]
    assert len(rel) == 3 and torch.equal(t.y_test, t.x_test[:, rel].sum(1) % 2)


@pytest.mark.parametrize("name,opts", [("mqar", {"vocab": 6, "pairs": 4}), ("mqar", {"length": 8}),
                                       ("sort", {"vocab": 5, "length": 8}), ("induction", {"fixed_offset": 3}),
                                       ("modadd", {"train_frac": 1.5}), ("parity", {"k": 30})])
def test_impossible_options_name_the_task_and_the_problem(name, opts):
    with pytest.raises(ConfigError, match=f"task {name}"):
        make_task(name, opts)
