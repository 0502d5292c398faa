"""probe: measure how close trained MLPs come to convolutional and attention structure.

The public surface, for scripts and notebooks (the `probe` command is built on the same functions)::

    import probe
    cfg = probe.RunConfig(task="mnist1d", width=100, steps=2000)
    probe.run_training(cfg, "runs/mlp")                      # a run folder, as `probe train` writes it
    run = probe.load_run("runs/mlp")                         # config, task, model, layers of its last checkpoint
    report = probe.analyze_checkpoint("runs/mlp")            # every measure beside its references
    report = probe.analyze(model, input_shape=(3, 32, 32))   # a model, state_dict or file from elsewhere
    probe.first_layer_measures(run.first_layer, run.geometry)

Training: :class:`RunConfig`, :func:`config_for` (a task's own training defaults), :func:`make_task`,
:func:`build_model`, :func:`run_training`. Reading runs back:
:func:`load_run` (one checkpoint's model), :func:`read_metrics` (a run's rows), :func:`load_runs` (many runs' rows
as one tidy DataFrame), :func:`analyze_checkpoint`, :func:`analyze_run` (a tidy DataFrame), :func:`analyze` (a model,
state_dict or file from elsewhere).
Figures: :func:`measures_figure`, :func:`accuracy_figure`, :func:`final_figure`, :func:`spectra_figure` and the others
of :mod:`probe.figures.plots`, each from a tidy table, each drawing into ``ax=`` when given.
Measures: :data:`MEASURES` (the registry), :func:`first_layer_measures`, :func:`layer_measures`,
:func:`function_measures`, :func:`references`; every measure function is in :mod:`probe.metrics`.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from probe.geometry import Geometry

# name -> module: imported on first use, so that `import probe` (and `probe --help`) stays fast without torch
_PUBLIC = {
    "MEASURES": "probe.metrics.registry",
    "RunConfig": "probe.config",
    "analyze": "probe.analysis.api",
    "analyze_checkpoint": "probe.analysis.api",  # a path, or (as probe.analyze) a model in memory
    "analyze_run": "probe.analysis.report",
    "build_model": "probe.models",
    "config_for": "probe.tasks",
    "first_layer_measures": "probe.metrics",
    "function_measures": "probe.analysis.function",
    "layer_measures": "probe.metrics",
    "load_run": "probe.analysis.load",
    "load_runs": "probe.figures.tables",
    "make_task": "probe.tasks",
    "read_metrics": "probe.run.metrics_file",
    "references": "probe.metrics",
    "run_training": "probe.run.loop",
    # figures: each takes ax= (fields_grid_figure and fields_figure: fig=) to compose a figure in a notebook
    "accuracy_figure": "probe.figures.plots",
    "dependence_figure": "probe.figures.plots",
    "distance_figure": "probe.figures.plots",
    "fields_figure": "probe.figures.fields",
    "fields_grid_figure": "probe.figures.plots",
    "final_figure": "probe.figures.plots",
    "interpolation_figure": "probe.figures.plots",
    "measures_figure": "probe.figures.plots",
    "routing_figure": "probe.figures.plots",
    "spectra_figure": "probe.figures.plots",
    "spectrum_figure": "probe.figures.plots",
}

try:
    __version__ = version("probe")
except PackageNotFoundError:  # pragma: no cover - a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["Geometry", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'probe' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
