"""The spectra figure draws what its tables hold: the eigenvalue density with its power-law fit, the unit spectra."""

import numpy as np
import pandas as pd

from probe.figures import plots
from probe.metrics.spectral import alpha_fit


def _tables():
    # a Pareto sample: a power-law tail of known exponent (density ~ lambda^-2.5 above 1), and a second run whose
    # spectrum is flat; unit spectra: one falling as 1/f, one flat
    rng = np.random.default_rng(0)
    tail = 1.0 + rng.pareto(1.5, 400)  # density ~ lambda^-(1 + 1.5)
    flat = rng.uniform(1.0, 2.0, 400)
    eigs, spectra = [], []
    for run, ev in (("heavy", tail), ("flat", flat)):
        fit = alpha_fit(None, ev)
        eigs.append(pd.DataFrame({"run": run, "step": 10, "eigenvalue": ev, "alpha": fit["alpha"],
                                  "xmin": fit["xmin"]}))
    f = np.arange(1, 9, dtype=float)
    spectra.append(pd.DataFrame({"run": "heavy", "frequency": f, "power": (1 / f) / (1 / f).sum()}))
    spectra.append(pd.DataFrame({"run": "flat", "frequency": f, "power": np.full(8, 1 / 8)}))
    return pd.concat(eigs, ignore_index=True), pd.concat(spectra, ignore_index=True)


def test_spectra_figure_draws_the_fit_and_the_unit_spectra_it_is_given():
    eigs, spectra = _tables()
    fig = plots.spectra_figure(eigs, spectra)
    ax_e, ax_f = fig.axes[:2]
    assert ax_e.get_xscale() == ax_e.get_yscale() == "log" and ax_f.get_yscale() == "log"
    heavy = eigs[eigs.run == "heavy"]
    a = float(heavy.alpha.iloc[0])
    assert 2.2 < a < 2.8  # the fit found the sample's exponent, 2.5
    # the dashed fit line of the heavy run: slope -alpha in log-log, from xmin on, labelled with alpha
    fits = [ln for ln in ax_e.get_lines() if ln.get_linestyle() == "--"]
    line = next(ln for ln in fits if ln.get_label() == rf"$\alpha$ = {a:.2f}")
    x, y = (np.asarray(v, dtype=float) for v in line.get_data())
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert abs(slope + a) < 1e-9 and x.min() == float(heavy.xmin.iloc[0])
    # and it sits on the density points drawn for that run (a histogram of 400 draws: within a factor of 1.6 at the
    # median over the tail's bins; a line of the wrong height or slope misses them by far more)
    dots = [ln for ln in ax_e.get_lines() if ln.get_linestyle() == "-" and ln.get_color() == line.get_color()]
    mx, my = (np.asarray(v, dtype=float) for v in dots[0].get_data())
    on_tail = (mx > 2 * x.min()) & (mx < x.max() / 4)
    model = np.interp(np.log(mx[on_tail]), np.log(x), np.log(y))
    assert on_tail.sum() >= 8 and np.median(np.abs(np.log(my[on_tail]) - model)) < np.log(1.6)
    # right panel: one line per run, the powers given
    drawn = {ln.get_label(): np.asarray(ln.get_data()[1], dtype=float) for ln in ax_f.get_lines()}
    assert len(drawn) == 2
    powers = sorted(drawn.values(), key=lambda p: p[0])
    np.testing.assert_allclose(powers[0], np.full(8, 1 / 8))
    np.testing.assert_allclose(powers[1], (1 / np.arange(1, 9)) / (1 / np.arange(1, 9)).sum())


def test_a_single_unit_layer_is_said_not_drawn_and_the_figure_saves(tmp_path):
    """A one-unit first layer (the nlgp presets' single neuron): W^T W has one nonzero eigenvalue, no density. Before
    the fix the panel went to log axes with nothing positive on them and saving raised matplotlib's "Data cannot be
    log-scaled" (`probe figures` on such a run ended in a traceback)."""
    eigs, spectra = _tables()
    one = pd.DataFrame({"run": "one-unit", "step": 10, "eigenvalue": np.r_[3.0, np.zeros(39)], "alpha": np.nan,
                        "xmin": np.nan})
    for e in (one, pd.concat([eigs, one], ignore_index=True)):
        fig = plots.spectra_figure(e, spectra[spectra.run == "heavy"].assign(run=e.run.iloc[0]))
        ax_e = fig.axes[0]
        assert any("fewer than two nonzero eigenvalues" in t.get_text() and "one-unit" in t.get_text()
                   for t in ax_e.texts)
        assert (ax_e.get_xscale() == "log") == (e.run.nunique() > 1)  # log axes only where a density is drawn
        assert plots.save(fig, tmp_path, f"spectra_{e.run.nunique()}")  # writes, no error
