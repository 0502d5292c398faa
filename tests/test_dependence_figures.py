"""The recurrence and add-task figures (probe.figures.plots: dependence, distance, spectrum) on tables with known
content: each draws what its table holds, where it says."""

import numpy as np
import pandas as pd
import pytest

from probe.figures import plots

T = 5


def _maps(kind: str, run: str, variant: str, task: str = "running-parity", seed: int = 0) -> pd.DataFrame:
    """One run's dependence map M[t, s]: ``causal`` 3 for s <= t, 0 above; ``decay`` 2^-(t - s) for s <= t."""
    rows = []
    for t in range(T):
        for s in range(T):
            v = (3.0 if kind == "causal" else 2.0 ** -(t - s)) if s <= t else 0.0
            rows.append((run, variant, task, seed, t, s, v))
    return pd.DataFrame(rows, columns=["run", "variant", "task", "seed", "t", "s", "value"])


def test_dependence_figure_draws_each_map_scaled_to_its_maximum_in_its_row_and_column():
    dep = pd.concat([_maps("causal", "a", "rnn"), _maps("decay", "b", "mlp")])
    fig = plots.dependence_figure(dep)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 2  # a row per variant, one task column
    causal, decay = (np.asarray(a) for a in images)
    assert causal.shape == (T, T) and np.allclose(causal, np.tril(np.ones((T, T))))  # nothing above t = s
    expected = np.tril(2.0 ** -np.subtract.outer(np.arange(T), np.arange(T)).clip(0))
    assert np.allclose(decay, expected)  # its maximum, on the diagonal, is 1
    with pytest.raises(ValueError, match="no dependence maps"):
        plots.dependence_figure(dep.iloc[:0])


def test_distance_figure_draws_the_share_of_dependence_at_each_distance():
    dep = pd.concat([_maps("decay", "b0", "mlp", seed=0), _maps("decay", "b1", "mlp", seed=1)])
    fig = plots.distance_figure(dep)
    line = [ln for ln in fig.axes[0].lines if ln.get_marker() == "o"][0]
    d, share = line.get_xdata(), line.get_ydata()
    # mean over the pairs at distance d (T - |d| of them), divided by the sum over d: 2^-d for d >= 0, 0 below
    mean = {k: (2.0 ** -k if k >= 0 else 0.0) for k in range(-(T - 1), T)}
    total = sum(mean.values())
    assert sorted(d) == list(range(-(T - 1), T))
    assert np.allclose([s for k, s in sorted(zip(d, share))], [mean[k] / total for k in sorted(mean)])
    assert fig.axes[0].get_yscale() == "log" and "n = 2" in line.get_label()


def test_spectrum_figure_draws_each_measure_beside_its_controls():
    rows = []
    for n in (100, 1000):
        for seed in (0, 1):
            rows += [(f"r{n}_{seed}", "mlp", n, "sum", "rel_mse", 0.5 / n * (1 + seed)),
                     (f"r{n}_{seed}", "mlp", n, "sum", "rel_mse@linreg", 0.1 / n),
                     (f"r{n}_{seed}", "mlp", n, "sum", "relevant_weight_mass", 0.9),
                     (f"r{n}_{seed}", "mlp", n, "sum", "relevant_weight_mass@gaussian", 0.2)]
    final = pd.DataFrame(rows, columns=["run", "variant", "task.n_train", "task_opts.op", "metric", "value"])
    fig = plots.spectrum_figure(final)
    mse, mass = fig.axes[0], fig.axes[1]
    assert mse.get_title() == "error in the training range" and mass.get_title().startswith("first-layer energy")
    model = [ln for ln in mse.lines if ln.get_label() == "MLP"][0]
    assert list(model.get_xdata()) == [100, 1000] and np.allclose(model.get_ydata(), [0.75 / 100, 0.75 / 1000])
    controls = [ln for ln in mse.lines if ln is not model]
    assert len(controls) == 1 and np.allclose(controls[0].get_ydata(), [0.1 / 100, 0.1 / 1000])  # @linreg
    assert any(np.allclose(ln.get_ydata(), 0.2) for ln in mass.lines)  # the null 2/D, drawn where stored
    assert mse.get_xscale() == "log" and mass.get_ylim()[1] == pytest.approx(1.03)
    with pytest.raises(ValueError, match="no add-task measures"):
        plots.spectrum_figure(final[final.metric == "nosuch"])
