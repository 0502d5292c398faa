"""Sample-complexity exponents: power-law fits of test error against training examples."""

import json

import numpy as np
import pandas as pd
import pytest

from probe.analysis.scaling import fit_power_law, sample_complexity, seed_fits
from probe.sweep.summary import exponents


def test_fit_recovers_an_exact_power_law():
    n = np.array([250, 500, 1000, 4000, 100000])
    a, b = fit_power_law(n, 3.0 * n**-0.37)
    assert a == pytest.approx(3.0) and b == pytest.approx(0.37)


def test_fit_leaves_out_zero_errors_and_needs_two_sizes():
    a, b = fit_power_law([100, 1000, 10000], [0.5, 0.05, 0.0])
    assert b == pytest.approx(1.0)
    assert np.isnan(fit_power_law([100, 1000], [0.5, 0.0])[1])


def synthetic_runs(exponents_by_model, seeds=range(5), sizes=(250, 500, 1000, 2000, 4000), noise=0.05):
    rng = np.random.default_rng(0)
    rows = []
    for model, b in exponents_by_model.items():
        for s in seeds:
            b_s = b + noise * rng.standard_normal()  # each seed's own learning curve
            for n in sizes:
                rows.append({"variant": model, "seed": s, "n": n, "err": 2.0 * n**-b_s})
    return pd.DataFrame(rows)


def test_sample_complexity_recovers_each_models_exponent_and_its_spread_over_seeds():
    df = synthetic_runs({"mlp": 0.2, "cnn": 0.6}, noise=0.05)
    t = sample_complexity(df, "variant").set_index("variant")
    for model, b in (("mlp", 0.2), ("cnn", 0.6)):
        per_seed = [fit_power_law(g.n, g.err)[1] for _, g in df[df.variant == model].groupby("seed")]
        assert t.loc[model, "exponent"] == pytest.approx(np.mean(per_seed))
        assert t.loc[model, "exponent_sd"] == pytest.approx(np.std(per_seed, ddof=1))
        assert abs(t.loc[model, "exponent"] - b) < 3 * 0.05 / np.sqrt(5) + 1e-9
    assert (t["seeds"] == 5).all() and (t["n_max"] == 4000).all()
    fits = seed_fits(df, "variant")  # the rows behind the summary: one per seed, the same mean
    assert len(fits) == 10 and set(fits.columns) >= {"variant", "seed", "exponent", "prefactor", "sizes"}
    assert fits[fits.variant == "cnn"].exponent.mean() == pytest.approx(t.loc["cnn", "exponent"])
    exact = sample_complexity(synthetic_runs({"mlp": 0.3}, noise=0.0), "variant")
    assert exact.exponent[0] == pytest.approx(0.3) and exact.exponent_sd[0] == pytest.approx(0.0, abs=1e-12)


def test_sweep_exponents_read_each_runs_real_training_set_size(tmp_path):
    """A fake finished data-size sweep: n_train = 0 (the whole split) counts as the size task.json records."""
    runs, true_n = [], {250: 250, 1000: 1000, 0: 4000}
    for model, b in (("mlp", 0.25), ("cnn", 0.5)):
        for s in (0, 1):
            for k, n in true_n.items():
                name = f"{model}_n_train={k}_s{s}"
                d = tmp_path / name
                d.mkdir()
                (d / "task.json").write_text(json.dumps({"n_train": n}))
                (d / "config.json").write_text(json.dumps({"steps": 10}))
                (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "test_acc": 1 - 0.9 * n**-b}) + "\n")
                runs.append({"name": name, "varied": {"variant": model, "task_opts.n_train": k, "seed": s}})
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": runs,
                                                     "columns": ["variant", "task_opts.n_train", "seed"]}))
    df = pd.DataFrame([{"run": r["name"], "status": "done", **r["varied"],
                        "test_acc": json.loads((tmp_path / r["name"] / "metrics.jsonl").read_text())["test_acc"]}
                       for r in runs])
    t = exponents(tmp_path, df).set_index("variant")
    assert t.loc["mlp", "exponent"] == pytest.approx(0.25) and t.loc["cnn", "exponent"] == pytest.approx(0.5)
    assert t.loc["cnn", "n_max"] == 4000 and (tmp_path / "exponents.csv").is_file()
    per_seed = pd.read_csv(tmp_path / "exponents_seeds.csv")
    assert sorted(per_seed.seed[per_seed.variant == "mlp"]) == [0, 1]
    assert per_seed.exponent[per_seed.variant == "mlp"].to_numpy() == pytest.approx([0.25, 0.25])
    df.loc[df.run.str.startswith("cnn") & df.run.str.contains("s1"), "status"] = "failed"
    assert exponents(tmp_path, df, write=False).set_index("variant").loc["cnn", "seeds"] == 1
