"""``probe.analyze``: the `probe analyze` report of a path, a model or a state_dict in memory (a notebook's model),
as ``WeightWatcher(model=m).analyze()`` takes a model. A thin layer: it builds the :class:`Source` the CLI builds
from a file (:mod:`probe.analysis.outside` reads what the object is) and hands it to the same report."""

from __future__ import annotations

from pathlib import Path

from probe.analysis import report
from probe.analysis.load import Source, outside_source, parse_input_shape
from probe.analysis.outside import in_memory, probe_model_layout
from probe.analysis.report import Analysis


def analyze(model, *, input_shape=None, first_layer: str | None = None, stride: int | None = None,
            padding: int | None = None, periodic: bool = False, layer: str | None = None, data: bool = True,
            n_data: int = 512, seed: int = 0, init=None, delta: bool = False):
    """Measure ``model`` beside its references; returns the :class:`~probe.analysis.report.Report` `probe analyze`
    prints for the same weights.

    Args:
        model: a path (anything `probe analyze` takes), an ``nn.Module`` or a state_dict.
        input_shape: (C, L) or (C, H, W) (or the text "C,H,W") of the first layer's inputs; not needed for a patch
            embedding, a probe checkpoint or a save_pretrained folder whose config.json gives the image size.
        first_layer: the state_dict key of the first layer (default: the first weight; a model's module names
            are its state_dict keys without ``.weight``).
        stride, padding: the first convolution's, where they are not read from the module (given a model object,
            its Conv module says them).
        periodic, layer, data, n_data, seed, delta: as `probe analyze`; ``init``: the initial weights, an object
            of the same kind as ``model`` (or a path), for the init reference and movement.
    """
    if isinstance(input_shape, str):
        input_shape = parse_input_shape(input_shape)
    options = {"first_layer": first_layer, "stride": stride, "padding": padding}
    if isinstance(model, (str, Path)):
        return report.analyze_checkpoint(model, input_shape=input_shape, periodic=periodic, data=data, layer=layer,
                                         n_data=n_data, seed=seed, init=init, delta=delta, **options)
    sd, hints, label = in_memory(model)
    if hasattr(model, "first_layer_dense") and not any(v is not None for v in options.values()):
        # a probe model: its own dense first layer (an LCN's unshared kernels, a shuffled or embedded input)
        layout = probe_model_layout(model, sd, label, input_shape, periodic)
        source = Source(Path(label), sd, layout.geometry, layout=layout)
    else:
        source = outside_source(sd, label, label, input_shape, periodic, hints, **options)
    analysis = Analysis.of(source, data, n_data, seed)
    if init is not None:
        if isinstance(init, (str, Path)):
            analysis.init_path = init
        else:
            sd0, hints0, label0 = in_memory(init)
            shape = (source.geometry.channels, *source.geometry.spatial)
            analysis.init_source = outside_source(sd0, label0, f"init {label0}", shape, source.geometry.periodic,
                                                  hints0, **options)
            analysis.init_path = f"{label0} (init)"  # not the measured model's label: see Analysis.report
        analysis.layers_of_source = list(analysis.layers(source))
    return analysis.report(source, layer, delta)


def analyze_checkpoint(path, **options):
    """:func:`probe.analysis.report.analyze_checkpoint` of a path; of a model or state_dict in memory,
    :func:`analyze` (the same keywords)."""
    if isinstance(path, (str, Path)):
        return report.analyze_checkpoint(path, **options)
    return analyze(path, **options)
