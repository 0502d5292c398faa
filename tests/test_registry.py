"""The measure registry is the one list of measures: everything that lists measures is derived from it."""

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from probe import metrics
from probe.cli import app
from probe.figures.plots import LABELS
from probe.figures.plots import PERCENT as PERCENT_KEYS
from probe.geometry import Geometry
from probe.metrics import registry
from probe.metrics.registry import KEYS, MEASURES, PROCEDURE_KEYS, SCOPES, markdown
from probe.run.tracking import EXPENSIVE, TRACKABLE, Tracker

ROOT = Path(__file__).parents[1]


def test_every_record_is_complete_and_its_function_documents_a_formula():
    for name, m in MEASURES.items():
        assert m.scope in SCOPES, name
        assert m.label and m.high and m.low, name
        fn = m.fn.func if hasattr(m.fn, "func") else m.fn
        assert len(inspect.getdoc(fn) or "") > 40, f"{name}: {m.formula} has no docstring formula"
    keys = [k for m in MEASURES.values() for k in m.outputs]
    assert len(keys) == len(set(keys)), "two measures write the same key"


def test_derived_tables_follow_the_registry():
    # each derived name computes what its record says: the record's function, and exactly the record's keys
    W = np.random.default_rng(2).standard_normal((20, 24))
    geo = Geometry(2, (12,))
    for name, fn in metrics.FIRST_LAYER_MEASURES.items():
        assert MEASURES[name].scope == "first" and fn is MEASURES[name].fn, name
        assert set(metrics.first_layer_measures(W, geo, [name])) == set(MEASURES[name].outputs), name
    assert len(metrics.FIRST_LAYER_MEASURES) == sum(m.scope == "first" for m in MEASURES.values())
    spectra = metrics.layer_measures(W)
    assert tuple(spectra) == metrics.SPECTRAL_MEASURES
    assert spectra == {n: pytest.approx(MEASURES[n].fn(W), rel=1e-12) for n in metrics.SPECTRAL_MEASURES}
    assert all(MEASURES[n].scope == "layer" for n in metrics.SPECTRAL_MEASURES)
    assert set(TRACKABLE) == {n for n, m in MEASURES.items() if m.trackable}
    assert set(EXPENSIVE) <= set(TRACKABLE)
    # the figures' label of a key is its record's, except accuracies drawn in percent (plots.PERCENT), whose axis
    # says so; the record's label describes the stored value (0..1)
    from probe.figures.plots import PERCENT

    assert all(LABELS[k] == MEASURES[n].label for n in MEASURES for k in MEASURES[n].outputs if k not in PERCENT)
    assert all(LABELS[k].endswith("(%)") for n in MEASURES for k in MEASURES[n].outputs if k in PERCENT)
    assert all(KEYS[k].bounds == (0.0, 1.0) for k in PERCENT)


def _procedures() -> dict:
    """The procedures probe.run runs: the mapping named PROCEDURES in whichever module of probe.run defines it."""
    import importlib
    import pkgutil

    import probe.run

    for info in pkgutil.walk_packages(probe.run.__path__, "probe.run."):
        found = getattr(importlib.import_module(info.name), "PROCEDURES", None)
        if isinstance(found, dict):
            return found
    pytest.fail("no PROCEDURES mapping in probe.run")


def test_every_key_is_written_by_a_real_measure_or_procedure_and_has_its_words():
    procedures = _procedures()
    assert set(PROCEDURE_KEYS) <= set(procedures), "a registered procedure that probe.run does not run"
    for name, key in KEYS.items():
        assert set(key.procedures) <= set(procedures), name
        assert not key.measure or name in MEASURES[key.measure].outputs, name
        lo, hi = key.bounds
        assert lo < hi and key.title, name
    for name in ("conv_subspace_distance", "ntk_cka", "line_barrier", "sparsity", "readout_shift_distance"):
        assert KEYS[name].procedures and not KEYS[name].measure, name
    # every measure's key has its own title, not the fallback of its name in words (twins: their base's, prefixed)
    untitled = [k for m in MEASURES.values() if not m.base for k in m.outputs if k not in registry._TITLES]
    assert not untitled, f"keys without a title in the registry: {untitled}"
    assert KEYS["delta_ipr"].title == "ΔW: " + KEYS["ipr"].title and KEYS["delta_ipr"].bounds == KEYS["ipr"].bounds


def test_figures_verdicts_and_nulls_read_the_registry(monkeypatch):
    # a record changed in the registry changes what the figures, the verdicts and the references say of it
    from probe.analysis import verdicts
    from probe.figures import labels as words
    from probe.metrics import nulls

    assert LABELS == registry.labels() and set(PERCENT_KEYS) == set(registry.percent_keys())
    monkeypatch.setitem(KEYS, "ipr", replace(KEYS["ipr"], title="a new title", bounds=(0.0, 2.0)))
    assert words.title("ipr") == "a new title" and words.value_range("ipr", 100.0) == (0.0, 200.0)
    assert verdicts.DECIDING_NULL == {n: m.decided_by for n, m in MEASURES.items() if m.decided_by and not m.base}
    assert verdicts.STRUCTURE["conv_distance_3"] == MEASURES["conv_distance_3"].structure
    assert {n for n, m in MEASURES.items() if m.low_is_structure and not m.base} == verdicts.LOW_IS_STRUCTURE
    first = {n: m for n, m in MEASURES.items() if m.scope == "first"}
    assert set(nulls.PHASE_MEASURES) == {n for n, m in first.items() if "phase" in m.nulls}
    assert nulls.LCN_MEASURES == {n: m.lcn_window for n, m in first.items() if "lcn" in m.nulls}
    assert set(nulls.INIT_SEED_MEASURES) == {n for n, m in first.items() if "init_seeds" in m.nulls}
    # every null a record names is one the references draw, and every deciding null is among its record's nulls
    for n, m in MEASURES.items():
        assert set(m.nulls) <= {"phase", "lcn", "init_seeds"} and bool(m.lcn_window) == ("lcn" in m.nulls), n
        assert not m.decided_by or m.decided_by in m.nulls, n


def test_a_tracker_of_every_trackable_measure_writes_exactly_their_keys():
    from probe.config import RunConfig

    g = Geometry(1, (12,))
    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((16, 12))
    cfg = RunConfig(task="mnist1d", steps=10, eval_every=5, log_every=5)
    plain = [n for n in TRACKABLE if MEASURES[n].scope in ("first", "layer", "init")]  # the ΔW and G twins:
    tracker = Tracker(plain, cfg, g, W0)  # tests/test_pull.py
    row = tracker.measure(W0 + 0.1 * rng.standard_normal(W0.shape))
    assert set(row) == set(tracker.keys()) == {k for n in plain for k in MEASURES[n].outputs}
    delta = [n for n in TRACKABLE if MEASURES[n].scope == "delta"]
    tracker = Tracker(delta, cfg, g, W0)
    row = tracker.mechanism(W0 + 0.1 * rng.standard_normal(W0.shape), None)
    assert set(row) == set(tracker.keys()) == {k for n in delta for k in MEASURES[n].outputs}


def test_readme_tables_are_the_registrys():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- measure tables")
    block = readme[readme.index("\n", start) + 1 : readme.index("<!-- end of measure tables -->")]
    assert block == markdown(), "README measure tables are stale: python -m probe.metrics.registry"


def test_probe_measures_lists_the_registry_and_refuses_unknown_names():
    runner = CliRunner()
    res = runner.invoke(app, ["measures"])
    assert res.exit_code == 0
    assert all(n in res.output for n in MEASURES)
    res = runner.invoke(app, ["measures", "window_mass_3"])
    assert res.exit_code == 0 and MEASURES["window_mass_3"].high in " ".join(res.output.split())
    res = runner.invoke(app, ["measures", "nosuch"])
    assert res.exit_code == 2 and "unknown measure 'nosuch'" in res.output


@pytest.mark.parametrize("name", [n for n, m in MEASURES.items() if m.scope == "first"])
def test_every_first_layer_measure_runs_on_a_random_layer_and_is_scale_free(name):
    # every key the record lists, finite, and unchanged when the weights are scaled (what lets one unit-variance
    # Gaussian reference serve every checkpoint of a layer shape) or the units reordered (a layer's units have no
    # order)
    W = np.random.default_rng(1).standard_normal((20, 24))
    geo = Geometry(2, (12,))
    out = metrics.first_layer_measures(W, geo, names=[name])
    assert set(out) == set(MEASURES[name].outputs) and all(np.isfinite(v) for v in out.values())
    scaled = metrics.first_layer_measures(3.7 * W, geo, names=[name])
    assert scaled == {k: pytest.approx(v, rel=1e-9, abs=1e-12) for k, v in out.items()}
    reordered = metrics.first_layer_measures(W[::-1], geo, names=[name])
    assert reordered == {k: pytest.approx(v, rel=1e-9, abs=1e-12) for k, v in out.items()}
