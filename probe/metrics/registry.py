"""The measure registry: one record per measure, from which everything else that lists measures is derived.

:data:`MEASURES` says, for each measure, how it is computed (``fn`` and its ``scope``), which keys it writes, how
a figure labels its axis, what a high and a low value mean, whether it is cheap enough to track during training,
and where its formula is written (the docstring of ``fn``). :mod:`probe.metrics` builds its tables from it
(``FIRST_LAYER_MEASURES``, ``MEASURE_KEYS``, ``SPECTRAL_MEASURES``), tracking its ``TRACKABLE`` and ``EXPENSIVE``
names, the figures their axis labels, ``probe measures`` its list and the README its tables
(``python -m probe.metrics.registry`` prints them; a test keeps the README equal to it). Adding a measure is
one function with its formula and tests, and one record here.

Scopes (what ``fn`` takes):
- ``first``: ``fn(W, geometry)``, the first layer over the input geometry;
- ``layer``: ``fn(W)``, any weight matrix (the spectral measures);
- ``init``: ``fn(W, W0)``, a layer against the run's initialization;
- ``data``: ``fn(W, X)``, the first layer against the task's training inputs;
- ``function``: the model on its task (:mod:`probe.analysis.function` computes them; ``fn`` is where the formula
  is written);
- ``delta`` and ``grad``: a first-layer or layer measure (``base``) on ΔW = W - W_0 or on the pull G = dL/dW_1
  (:mod:`probe.metrics.pull`), keys prefixed ``delta_`` / ``grad_``; the pull's own ``grad_com_share``;
- ``layout``: ``fn(M, index)`` on ΔW and G in a known unit layout (an embedded CNN or LCN);
- ``paired``: ``fn(W, geometry, ...)``, a first-layer measure that draws its own null and writes it beside its
  value (``tiling``; ``filter_match``, which also takes a trained CNN's filters); computed where asked
  (:mod:`probe.metrics.tiling`), not by analyze or tracking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

from probe.metrics import arith, functional, locality, pull, recurrence, routing, second_order, sparsity, spectral
from probe.metrics import intervention, step, tiling
from probe.metrics.equivariance import conv_distance, shift_match

SCOPES = ("first", "layer", "init", "data", "function", "delta", "grad", "layout", "paired")
TWINS = {"delta": "ΔW = W - W₀", "grad": "the pull G = dL/dW₁"}  # derived scopes: prefix -> what is measured


@dataclass(frozen=True)
class Measure:
    """One measure: its name, how it is computed, the keys it writes and how to read it."""

    name: str
    fn: Callable
    scope: str
    group: str  # the README table it is listed in
    label: str  # a figure's axis label: what the number is, with its unit or range
    high: str  # what a high value means
    low: str  # what a low value means
    keys: tuple[str, ...] = ()  # the keys it writes, when not just its name
    trackable: bool = False  # computed during training by --track
    expensive: bool = False  # seconds, not milliseconds, on a 4096 x 3072 layer (scripts/bench_analyze.py)
    kinds: tuple[str, ...] = ()  # the task kinds it applies to; default: image for the first layer's, else both
    base: str = ""  # a delta_/grad_ twin: the measure it applies to ΔW or G
    # how it is read (docs/design.md §4.3; probe.metrics.nulls draws, probe.analysis.verdicts reads):
    nulls: tuple[str, ...] = ()  # references drawn for it beyond gaussian, permuted and init: phase, lcn, init_seeds
    lcn_window: int = 0  # the window size k of its lcn reference's fields
    decided_by: str = ""  # the reference that would fake it, which its verdict reads it against
    structure: str = ""  # what beating that reference shows, in words
    low_is_structure: bool = False  # whether a value below the reference is the structure

    @property
    def task_kinds(self) -> tuple[str, ...]:
        """Image measures read the first layer over a grid of pixels; on a sequence task that layer is a token
        table, where they are trivially 0 or 1 (the routing measures are the sequence analogues)."""
        return self.kinds or (("image",) if self.scope in ("first", "grad", "layout") else ("image", "sequence"))

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.keys or (self.name,)

    @property
    def formula(self) -> str:
        """Where the formula is written: the module and name of ``fn`` under probe."""
        fn = self.fn.func if isinstance(self.fn, partial) else self.fn
        return f"{fn.__module__.removeprefix('probe.')}.{fn.__name__}"


_RECURRENCE = "Function: recurrence (sequence tasks with an answer at every position)"
_ARITH = "Function: the add task (two relevant inputs among D)"
_SECOND = "Function: which input statistics the solution uses (image classification; `final_measures = " \
    "[\"second_order\"]`)"
_LOCALITY, _TRANSLATION, _SPECTRA, _EVERY, _FUNCTION = (
    "First layer: locality and sparsity", "First layer: translation structure", "First layer: spectra per unit, "
    "and the data", "Every layer", "Function section (needs the task's data)")

MEASURES: dict[str, Measure] = {m.name: m for m in (
    # -- the first layer over the input geometry -----------------------------------------------------------------
    Measure("ipr", locality.ipr, "first", _LOCALITY, "ipr (1/|S| flat .. 1 pixel)",
            "energy concentrated on few positions (1 = a single pixel)",
            "spread over the grid (1/\\|S\\| flat; (C+2)/(C\\|S\\|+2) random Gaussian; less for PyTorch's uniform "
            "init, see the `init_seeds` reference)", trackable=True),
    Measure("ipr_frac_above", locality.ipr_frac_above, "first", _LOCALITY, "share of units",
            "many units individually localized (share above twice the Gaussian ipr)",
            "none stands out (≈ 0 for Gaussian weights)", trackable=True),
    Measure("spread", locality.spread, "first", _LOCALITY, "spread of fields (pixels)",
            "fields wide (pixels from their centre of mass)", "fields compact around one place (smooth fields are "
            "compact too: read against the `phase` reference)", trackable=True),
    Measure("window_mass_3", partial(locality.window_mass, k=3), "first", _LOCALITY, "share of field energy",
            "most energy inside one contiguous k (k x k) window (1 = a kernel ≤ k); smooth fields score above the "
            "`permuted` reference without being local: read against `phase`", "energy scattered, not contiguous",
            trackable=True),
    Measure("window_mass_5", partial(locality.window_mass, k=5), "first", _LOCALITY, "share of field energy",
            "as window_mass_3, with k = 5", "energy scattered, not contiguous", trackable=True),
    Measure("hoyer", sparsity.hoyer, "first", _LOCALITY, "sparsity (0 dense .. 1)",
            "few large weights per unit (1 = one nonzero)", "dense, even weights (0 = all equal magnitude)",
            trackable=True),
    Measure("zero_frac", sparsity.zero_frac, "first", _LOCALITY, "share of weights at zero",
            "many exactly-zero weights (pruned, beta-LASSO)", "dense layer (0)", trackable=True),
    Measure("displacement", sparsity.displacement, "first", _LOCALITY, "pixels from the field's centre",
            "surviving connections far from their unit's centre",
            "surviving connections close: local masks (read on sparse layers, against the references)",
            keys=("displacement_mean", "displacement_median"), trackable=True, expensive=True),
    Measure("shift_match", shift_match, "first", _TRANSLATION, "mean cosine under shift",
            "each unit's one-pixel shift is another unit, as in a convolution (1); no unit is its own partner; "
            "smooth fields still score high: read against the `phase` reference, and phase-shifted sinusoids "
            "(equivariant, not local) with locality",
            "no shifted copies among the units (random null, which rises for few units); `shift_match_units`: "
            "how many units were matched (a seeded sample when m > 1024)",
            keys=("shift_match", "shift_match_units"), trackable=True, expensive=True),
    Measure("conv_distance_3", partial(conv_distance, k=3), "first", _TRANSLATION, "relative distance",
            "far from any layer a stride-1 convolution with kernel k could produce (1 = random, local but "
            "unshared, or one filter at one position; ≥ 0.9 for the `lcn` reference)",
            "convolutional: filters shared across positions (0 = exact conv with kernel ≤ k; < 0.3 conv up to "
            "small noise where crops are long; short crops demand near-exact sharing)",
            trackable=True, expensive=True),
    Measure("conv_distance_5", partial(conv_distance, k=5), "first", _TRANSLATION, "relative distance",
            "as conv_distance_3, with k = 5", "as conv_distance_3, with k = 5", trackable=True, expensive=True),
    Measure("tiling", tiling.tiling, "paired", _TRANSLATION, "evenness of coverage (0 .. 1)",
            "the localized units' fields cover the positions evenly (1 = equal coverage); read against "
            "`tiling@random`, the same fields at random centres", "fields piled on a few places (one field copied to "
            "every unit is the least even)", keys=("tiling", "tiling@random")),
    Measure("filter_match", tiling.filter_match, "paired", _TRANSLATION, "best cosine with a CNN filter",
            "each field is a trained CNN's first-layer filter placed somewhere (1 = exactly); read against "
            "`filter_match@phase`, the same for the fields with their phases randomized",
            "fields unlike any of the CNN's filters, or spread beyond their window",
            keys=("filter_match", "filter_match@phase")),
    Measure("spectral_entropy", spectral.spectral_entropy, "first", _SPECTRA, "spectral entropy (0 .. 1)",
            "broad power spectra: localized (or random) fields", "peaked spectra: Fourier-like fields",
            trackable=True),
    Measure("peak_frequency", spectral.peak_frequency, "first", _SPECTRA, "cycles per grid length",
            "fields dominated by fine detail (cycles per grid length)", "smooth, low-frequency fields",
            trackable=True),
    Measure("input_pc_share", spectral.input_pc_share, "data", _SPECTRA, "share of the field in the top PCs",
            "the layer reads mostly the top-10 principal components of the inputs",
            "reads directions of little input variance (≈ 10/n at random)"),
    # -- every layer -----------------------------------------------------------------------------------------------
    Measure("movement", sparsity.movement, "init", _EVERY, "||W - W0|| / ||W0||",
            "training took the layer far from its initialization: ‖W − W₀‖ / ‖W₀‖",
            "lazy training, the layer stayed near init (0)", trackable=True),
    Measure("effective_rank", spectral.effective_rank, "layer", _EVERY, "effective rank (units)",
            "many singular values matter (exp of the entropy of normalized singular values)",
            "a few directions carry the layer", trackable=True, expensive=True),
    Measure("stable_rank", spectral.stable_rank, "layer", _EVERY, "stable rank (units)",
            "energy spread over many directions: ‖W‖_F² / ‖W‖₂²", "one direction dominates (weightwatcher's "
            "`stable_rank`)", trackable=True, expensive=True),
    Measure("alpha", spectral.alpha, "layer", _EVERY, "power-law exponent alpha",
            "a light eigenvalue tail, as random matrices give (their fits are noisy, usually above 4)",
            "a heavy-tailed spectrum, strongly correlated weights (weightwatcher reads 2-4 as well trained)",
            trackable=True, expensive=True),
    # -- the model on its task ---------------------------------------------------------------------------------------
    Measure("lie_derivative", functional.lie_derivative, "function", _FUNCTION, "mean sq. logit change per pixel",
            "logits change fast under a sub-pixel translation (not invariant): E‖d/dt f(T_t x)‖² / dim f",
            "translation-invariant function (0)", kinds=("image",)),
    Measure("lie_ratio", functional.lie_ratio, "function", _FUNCTION, "translation / random sensitivity",
            "translations move the logits as much as random moves of the same size (≈ 1) or more: no invariance",
            "translation-invariant (0); unlike lie_derivative, unchanged by the logits' scale", kinds=("image",)),
    Measure("shift_consistency", functional.shift_consistency, "function", _FUNCTION, "share of predictions kept",
            "predictions survive circular shifts by 1-3 pixels (1 = invariant); `noise_consistency_d`: the same "
            "under a random move of the shift's norm, its null (an untrained net keeps both near 1)",
            "predictions change when the input moves",
            keys=("shift_consistency_1", "shift_consistency_2", "shift_consistency_3", "noise_consistency_1",
                  "noise_consistency_2", "noise_consistency_3"), kinds=("image",)),
    Measure("position_ipr", routing.position_ipr, "function", _FUNCTION, "ipr over positions",
            "(sequences) each unit reads one position", "units read all positions alike (1/T)"),
    Measure("position_sharing", routing.position_sharing, "function", _FUNCTION, "share of shared projection",
            "every position is read through one shared projection, as attention's Q, K, V (1)",
            "each position read differently (≈ r/C at random)"),
    Measure("routing_accuracy", routing.routing_accuracy, "function", _FUNCTION, "share of answers routed",
            "the answer's Jacobian (attention) peaks at the true source: for key-value tasks the matching key or "
            "its value; `routing_accuracy_value`: the value alone", "routing not found",
            keys=("routing_accuracy", "routing_accuracy_value", "attn_routing_accuracy")),
    Measure("intervention_follow", routing.intervention_follow, "function", _FUNCTION, "share of answers following",
            "changing the source token changes the answer to it: content is routed", "the answer ignores the source"),
    Measure("swap_follow", routing.swap_follow, "function", _FUNCTION, "share of answers following",
            "(key-value tasks) after swapping two pairs' keys, or their values, the answer becomes the other "
            "pair's value: routing by content", "the answer stays (0: the context is ignored; 1/pairs: guessing)",
            keys=("swap_follow", "swap_follow_keys", "swap_follow_values")),
    Measure("input_dependence", routing.input_dependence, "function", _FUNCTION, "routing map change",
            "the routing map depends on the content, as attention's", "static mixing (0), as copy/reverse need"),
    Measure("self_mass", routing.self_mass, "function", _FUNCTION, "share of routing on the query",
            "the answer mostly reads its own query position", "it reads elsewhere"),
    Measure("perm_equivariance", routing.perm_equivariance, "function", _FUNCTION, "output change",
            "reordering blocks the answer ignores changes the output", "equivariant to that reordering (0)",
            keys=("perm_equivariance_error", "perm_flip_rate")),
    # -- recurrence and the add task ------------------------------------------------------------------
    Measure("time_sharing", recurrence.time_sharing, "function", _RECURRENCE, "share explained by t - s",
            "the output's dependence on the input at s (Jacobian energy) is a function of t - s: one map at every "
            "position, as a recurrence's or causal convolution's (1); null `time_sharing@permuted`. First order, "
            "along one-hot coordinates no input takes: it reads how a model is wired, not what its answers depend "
            "on (`time_sharing_iv` does)",
            "the dependence changes with absolute position (≈ 2/(T+2) for i.i.d. entries)"),
    Measure("causal_mass", recurrence.causal_mass, "function", _RECURRENCE, "share of dependence on s <= t",
            "the output at t depends only on inputs at or before t (1: causal, as rnn and causal transformer are "
            "by construction); null `causal_mass@permuted`", "it reads the future (≈ (T+1)/(2T) when every "
            "position counts alike)"),
    Measure("length_generalization", recurrence.length_accuracy, "function", _RECURRENCE, "accuracy at 2T / 4T (%)",
            "trained at length T, right at 2T and 4T as well (models that read any length: rnn, transformer)",
            "the solution is tied to the training length", keys=("test_acc_2T", "test_acc_4T")),
    Measure("relevant_weight_mass", arith.relevant_weight_mass, "function", _ARITH, "share of first-layer energy",
            "first-layer weight energy on the two inputs the rule reads (1 = every other weight zero); beside "
            "`@linreg`", "spread over all inputs (null `@gaussian` = 2/D)"),
    Measure("extrapolation", arith.rel_mse, "function", _ARITH, "MSE / var(y)",
            "large error relative to the target's variance (1 = predicting the mean), in the training range "
            "(`rel_mse`) and outside it (`extrap_rel_mse`); beside `@linreg` and `@rule`",
            "close to the exact rule (noise² / var(y); 0 without label noise)",
            keys=("rel_mse", "extrap_rel_mse")),
    # -- which input statistics the solution uses -------------------------------------------------------
    Measure("clone_acc", second_order.clone_accuracy, "function", _SECOND, "accuracy on the clone",
            "the network's accuracy survives on the class-conditional Gaussian clone test set (each class's "
            "training mean and covariance, nothing else): it rests on second-order statistics; `--track clone_acc`",
            "it needs more than the classes' first two moments (read beside test_acc and `qda_acc`)",
            kinds=("image",)),
    Measure("real_acc", second_order.clone_accuracy, "function", _SECOND, "accuracy on real data",
            "(runs trained on the clone, `clone=gaussian`) what second-order statistics teach carries over to "
            "the real data", "it does not", kinds=("image",)),
    Measure("qda_acc", second_order.qda_accuracy, "function", _SECOND, "QDA accuracy (0..1)",
            "the second-order ceiling: QDA (class-conditional Gaussians, shrinkage 1e-3) fitted on the real "
            "training set, on the real test set (`qda_acc`) and on the clone test set (`qda_clone_acc`)",
            "the classes' means and covariances separate them poorly", keys=("qda_acc", "qda_clone_acc"),
            kinds=("image",)),
)}


# -- how the first layer's structure measures are read: their extra references and the one that decides them ----------
# Smooth fields score high on locality and translation without being local: phase decides those; weight sharing
# must beat random local unshared fields (lcn, in windows of the measure's own size; shift_match's in windows of 5,
# where short local fields find shifted partners by chance); an initializer sets concentration before training.
_PHASE, _SEEDS = ("phase", "init_seeds"), ("init_seeds",)
_READ = {  # name -> (nulls, lcn window, deciding reference, what beating it shows, low is structure)
    "ipr": (_PHASE, 0, "phase", "localization", False),
    "ipr_frac_above": (_PHASE, 0, "phase", "localized units", False),
    "spread": (_PHASE, 0, "phase", "compactness", True),
    "window_mass_3": (_PHASE, 0, "phase", "locality", False),
    "window_mass_5": (_PHASE, 0, "phase", "locality", False),
    "hoyer": (_PHASE, 0, "init_seeds", "concentration", False),
    "zero_frac": (_SEEDS, 0, "", "", False),
    "shift_match": (("phase", "lcn"), 5, "phase", "translation structure", False),
    "conv_distance_3": (("lcn",), 3, "lcn", "weight sharing", True),
    "conv_distance_5": (("lcn",), 5, "lcn", "weight sharing", True),
}
MEASURES.update({n: replace(MEASURES[n], nulls=nulls, lcn_window=k, decided_by=by, structure=what, low_is_structure=low)
                 for n, (nulls, k, by, what, low) in _READ.items()})

# the routing measures are the sequence tasks' own
MEASURES.update({n: replace(m, kinds=("sequence",)) for n, m in MEASURES.items()
                 if m.fn.__module__ == routing.__name__})

# -- the learned part ΔW and the pull G (probe/metrics/pull.py) -------------------------------------------
_MECHANISM = "The learned part ΔW = W − W₀ and the pull G = dL/dW₁ (first layer)"


def _twin(prefix: str, m: Measure) -> Measure:
    """``delta_<m>`` / ``grad_<m>``: measure m on ΔW or on G, with its keys prefixed; read against the same nulls
    drawn from ΔW or G. The pull is computed for image models only (probe.metrics.pull.first_layer_module)."""
    kinds = ("image",) if prefix == "grad" else m.task_kinds
    return Measure(f"{prefix}_{m.name}", m.fn, prefix, _MECHANISM,
                   f"{m.label}, of {'ΔW' if prefix == 'delta' else 'G'}", m.high, m.low,
                   keys=tuple(f"{prefix}_{k}" for k in m.keys), trackable=m.trackable, expensive=m.expensive,
                   kinds=kinds, base=m.name, nulls=m.nulls, lcn_window=m.lcn_window, decided_by=m.decided_by,
                   structure=m.structure, low_is_structure=m.low_is_structure)


MEASURES.update({t.name: t for prefix in TWINS for m in list(MEASURES.values()) if m.scope in ("first", "layer")
                 for t in (_twin(prefix, m),)})
MEASURES.update({m.name: m for m in (
    Measure("grad_com_share", pull.com_share, "grad", _MECHANISM, "share of gradient energy",
            "the pull falls where each unit's field already is: share of the unit's gradient energy inside the k "
            "(k x k) window around its current weights' centre of mass (1 = all of it)",
            "the pull ignores where the field is (chance `@chance` = k^d/\\|S\\|, an isotropic G's expectation; "
            "`@units`: each unit's G read in another unit's window, for G and fields that gather mid-grid)",
            keys=tuple(f"grad_com_share_{k}" for k in pull.COM_WINDOWS), trackable=True),
    Measure("conv_share", pull.subspace_shares, "layout", _MECHANISM, "share of squared norm",
            "(a known unit layout: embedded CNN or LCN) G's (`grad_`) and ΔW's (`delta_`) energy lies in the "
            "layout's convolutional subspace (1 = weight-shared and local)",
            "no more than a random direction's share (`@random` = the subspace's dimension / m n), or than a local "
            "but unshared matrix's with its local share (`@local`, at every step)",
            keys=("grad_conv_share", "delta_conv_share"), trackable=True),
    Measure("local_share", pull.subspace_shares, "layout", _MECHANISM, "share of squared norm",
            "(a known unit layout) G's and ΔW's energy inside the layout's windows (1 = locally connected)",
            "no more than a random direction's share (`@random` = the windows' entries / m n)",
            keys=("grad_local_share", "delta_local_share"), trackable=True),
)})

# -- the mechanism read by the step taken and by intervention (probe/metrics/step.py, intervention.py) ---------------
MEASURES.update({m.name: m for m in (
    Measure("step_pull", step.step_pull, "grad", _MECHANISM, "change of S along the step",
            "the update the optimizer applies (W_t+1 - W_t) makes the first layer more structured by measure S "
            "(`dS`, first order), beyond random directions of its norm (`@random`) and another unit's step "
            "(`@units`), 20 draws each; with `step_norm` and `step_parallel_share` (scripts/mechanism_step.py)",
            "the step makes it less structured (negative) or does no more than a random step; the energy shares "
            "(`grad_com_share`, `*_conv_share`) say only where the gradient's energy sits",
            keys=("step_dS",)),
    Measure("subspace_step", step.subspace_step, "layout", _MECHANISM, "change of relative distance",
            "(a known unit layout) the step moves the layer out of the layout's convolutions (`conv_dist_change` > 0) "
            "or windows (`local_dist_change`), beyond random directions of its norm",
            "the step moves it into them (negative): signed, where the energy shares cannot tell in from out",
            keys=("conv_dist_change", "local_dist_change")),
    Measure("conv_share_local_null", step.local_conv_share_null, "layout", _MECHANISM, "share of squared norm",
            "conv_share@local computed: the conv_share M would have with random signs on its windows' entries "
            "(local, unshared, its energy where M has it; exact on zero-padded layouts)",
            "a matrix whose conv_share is no higher than this is local but not shared",
            keys=("conv_share_local_null",)),
    Measure("causal_mass_iv", intervention.causal_mass_iv, "function", _RECURRENCE, "share of effect from s <= t",
            "substituting a past or present token changes the answer at t; future tokens do not (1: causal), by "
            "intervention: step-like dependence counts, the number of positions and the all-ones direction do not",
            "the answer at t changes with future tokens; left out when no substitution changes any answer",
            kinds=("sequence",)),
    Measure("time_sharing_iv", intervention.time_sharing_iv, "function", _RECURRENCE, "share of consistent effects",
            "the same substitution at the same lag changes the answer the same way at every position (exact "
            "recurrent solutions: 1), read against `@permuted` (each position reading its answer its own way)",
            "a different map at every position; left out when no substitution changes an answer; uninformative "
            "for two answers (a change is a flip). On inputs of the task, any accurate model of a time-shared "
            "task reads as the task does: it cannot tell a position-tied solution from a recurrent one at the "
            "trained length (docs/findings-recurrence.md)", kinds=("sequence",)),
    Measure("relevant_grad_share", intervention.relevant_grad_share, "function", _ARITH,
            "share of input-gradient energy",
            "the function's input gradients lie on the relevant inputs (1), whatever its weights (dead units' do not "
            "count)", "the function reads every input alike (\\|R\\|/D); read beside `rel_mse` (x0 - x1 reads 1 too)"),
    Measure("relevant_iv_share", intervention.relevant_iv_share, "function", _ARITH, "share of resampling effect",
            "resampling a relevant input changes the output, resampling another does not (1; sees step-like "
            "dependence that gradients miss)", "every input moves the output alike (\\|R\\|/D)"),
    Measure("clone_detect_acc", intervention.clone_discriminator, "function", _SECOND, "discriminator accuracy",
            "a discriminator tells the real test inputs from their Gaussian clone: the clone lies off the data, and "
            "`clone_acc` reads behaviour there", "near 0.5: the clone looks like the data", kinds=("image",)),
)})


# -- every key probe writes: its words in a figure, the range of its values, and what writes it ----------------------
INF = float("inf")
UNIT, NON_NEGATIVE, COSINE, REAL = (0.0, 1.0), (0.0, INF), (-1.0, 1.0), (-INF, INF)


@dataclass(frozen=True)
class Key:
    """One key of metrics.jsonl, result.json, procedure.json or a report: a measure's output, a training metric or a
    procedure's result. Figures title a panel with ``title`` (what the number is, in words), label its axis with
    ``label`` (its unit or range; "" where none is written, and the figure says "value"), draw it times 100 where
    ``percent`` (an accuracy) and clip its +-sd bands to ``bounds``. ``measure``: the registered measure writing it;
    ``procedures``: the procedures of probe.run writing it (by name); neither: the trainer (losses, accuracies)."""

    name: str
    title: str
    label: str = ""
    bounds: tuple[float, float] = REAL
    percent: bool = False
    measure: str = ""
    procedures: tuple[str, ...] = ()


# panel titles: what the number is, in words (the axis label says its unit or range)
_TITLES = {
    "ipr": "localization (ipr)",
    "ipr_frac_above": "share of localized units",
    "spread": "spatial spread of fields",
    "window_mass_3": "energy in the best 3-pixel window",
    "window_mass_5": "energy in the best 5-pixel window",
    "hoyer": "sparsity of weights (Hoyer)",
    "zero_frac": "weights at zero",
    "displacement_mean": "field centre off its position (mean)",
    "displacement_median": "field centre off its position (median)",
    "shift_match": "fields matching their shifts",
    "shift_match_units": "units matched under shift",
    "conv_distance_3": "distance to convolutions (k = 3)",
    "conv_distance_5": "distance to convolutions (k = 5)",
    "spectral_entropy": "spectral entropy of fields",
    "peak_frequency": "peak spatial frequency",
    "input_pc_share": "fields in the inputs' top PCs",
    "movement": "movement from initialization",
    "effective_rank": "effective rank",
    "stable_rank": "stable rank",
    "alpha": "power-law exponent of the spectrum",
    "lie_derivative": "Lie derivative (translation)",
    "lie_ratio": "translation / random sensitivity",
    "position_ipr": "localization over positions",
    "position_sharing": "sharing across positions",
    "routing_accuracy": "routing to the source (key or value)",
    "routing_accuracy_value": "routing to the value",
    "attn_routing_accuracy": "attention routing to the source",
    "intervention_follow": "answers following an intervention",
    "swap_follow": "answers following a swap",
    "swap_follow_keys": "answers following swapped keys",
    "swap_follow_values": "answers following swapped values",
    "input_dependence": "routing map change across inputs",
    "self_mass": "routing on the query itself",
    "perm_equivariance_error": "permutation equivariance error",
    "perm_flip_rate": "answers flipped by a permutation",
    "time_sharing": "gradient: time sharing (t - s)",
    "causal_mass": "gradient: causal share (s <= t)",
    "relevant_weight_mass": "first-layer energy on the relevant inputs",
    "rel_mse": "error in the training range",
    "extrap_rel_mse": "error outside the training range",
    "grad_com_share_3": "pull inside each unit's 3-pixel field",
    "grad_com_share_5": "pull inside each unit's 5-pixel field",
    "grad_conv_share": "pull in the convolutions of the layout",
    "delta_conv_share": "ΔW in the convolutions of the layout",
    "grad_local_share": "pull in the layout's windows",
    "delta_local_share": "ΔW in the layout's windows",
    "clone_acc": "accuracy on the Gaussian clone",
    "real_acc": "accuracy on the real test set",
    "qda_acc": "QDA on the real test set",
    "qda_clone_acc": "QDA on the Gaussian clone",
    "ntk_cka": "NTK alignment with the reference",
    "ntk_kta": "NTK alignment with the labels (KTA)",
    "ntk_input_cka": "NTK alignment with X Xᵀ",
    "conv_subspace_distance_l2": "distance to the layout's convolutions, layer 2",
    "conv_subspace_distance_l3": "distance to the layout's convolutions, layer 3",
    "equiv_subspace_distance": "distance to the shift-equivariant layers",
    "equiv_subspace_distance_all": "distance to equivariant layers",
    "conv_complement_growth": "off-convolution part, layer 1",
    "conv_complement_growth_all": "off-convolution part",
    "equiv_complement_growth": "non-equivariant part, layer 1",
    "equiv_complement_growth_all": "non-equivariant part",
    "readout_shift_distance": "readout's distance to shift invariance",
    "test_acc": "test accuracy",
    "train_acc": "train accuracy",
    "test_loss": "test loss",
    "train_loss": "train loss",
    "test_acc_2T": "test accuracy at length 2T",
    "test_acc_4T": "test accuracy at length 4T",
    "cnn_test_acc": "test accuracy of the source CNN",
    "mlp_test_acc": "test accuracy of the plain MLP",
    "dense_test_acc": "test accuracy, dense",
    "line_barrier": "test loss barrier, eCNN -> MLP",
    "line_barrier_train": "train loss barrier, eCNN -> MLP",
    "line_barrier_unaligned": "test loss barrier, units not aligned",
    "line_barrier_train_unaligned": "train loss barrier, units not aligned",
    "line_error_barrier": "test error barrier, eCNN -> MLP",
    "line_error_barrier_unaligned": "test error barrier, units not aligned",
    "conv_subspace_distance": "distance to the layout's convolutions",
    "conv_subspace_distance_all": "distance to convolutions, all layers",
    "sparsity": "weights pruned",
}
_TITLES.update({
    "tiling": "evenness of the fields' coverage", "tiling@random": "coverage evenness, fields at random centres",
    "filter_match": "fields matching a CNN's filters", "filter_match@phase": "CNN filter match, phases randomized",
    "step_dS": "change of S along the step", "conv_dist_change": "step's change of the distance to convolutions",
    "local_dist_change": "step's change of the distance to the windows",
    "conv_share_local_null": "conv share of a local unshared layer",
    "causal_mass_iv": "substitution: causal share",
    "time_sharing_iv": "substitution: time sharing", "relevant_grad_share": "input gradient on the relevant "
    "inputs", "relevant_iv_share": "effect of resampling the relevant inputs",
    "clone_detect_acc": "real inputs told from the clone", "first_layer_sparsity": "first-layer weights pruned",
    "conv_complement_ratio": "off-convolution part, layer 1, end / start",
    "conv_complement_ratio_all": "off-convolution part, end / start",
    "equiv_complement_ratio": "non-equivariant part, layer 1, end / start",
    "equiv_complement_ratio_all": "non-equivariant part, end / start",
    "ref_kta": "reference NTK alignment with the labels", "input_kta": "X Xᵀ alignment with the labels",
    "ref_input_cka": "reference NTK alignment with X Xᵀ", "ref_test_acc": "test accuracy of the reference",
    "perturbed_test_acc": "test accuracy after the perturbation", "mlp_steps": "training steps of the plain MLP",
})
for _k in (1, 2, 3):
    _TITLES[f"shift_consistency_{_k}"] = f"kept under a {_k}-pixel shift"
    _TITLES[f"noise_consistency_{_k}"] = f"kept under noise of its norm ({_k} px)"

# the interval each key's values live in (shares and accuracies [0, 1]; mean cosines [-1, 1]; sizes, losses and
# distances [0, inf)); keys not listed are unbounded
_BOUNDS = {
    **dict.fromkeys((
        "ipr", "ipr_frac_above", "window_mass_3", "window_mass_5", "hoyer", "zero_frac", "conv_distance_3",
        "conv_distance_5", "spectral_entropy", "input_pc_share", "position_ipr", "position_sharing",
        "routing_accuracy", "routing_accuracy_value", "attn_routing_accuracy", "intervention_follow", "swap_follow",
        "swap_follow_keys", "swap_follow_values", "self_mass", "time_sharing", "causal_mass", "relevant_weight_mass",
        "perm_flip_rate", "conv_subspace_distance", "conv_subspace_distance_all", "sparsity", "grad_com_share_3",
        "grad_com_share_5", "grad_conv_share", "delta_conv_share", "grad_local_share", "delta_local_share",
        "clone_acc", "real_acc", "qda_acc", "qda_clone_acc", "ntk_cka", "ntk_kta", "ntk_input_cka",
        "equiv_subspace_distance", "equiv_subspace_distance_all", "test_acc", "train_acc", "cnn_test_acc",
        "mlp_test_acc", "dense_test_acc", "ref_test_acc", "perturbed_test_acc", "test_acc_2T", "test_acc_4T",
        *(f"{kind}_consistency_{k}" for kind in ("shift", "noise") for k in (1, 2, 3)), "tiling", "tiling@random",
        "conv_share_local_null", "causal_mass_iv", "time_sharing_iv", "relevant_grad_share", "relevant_iv_share",
        "clone_detect_acc", "first_layer_sparsity", "ref_kta", "input_kta", "ref_input_cka",
        "conv_subspace_distance_l2", "conv_subspace_distance_l3"), UNIT),
    "shift_match": COSINE, "filter_match": COSINE, "filter_match@phase": COSINE,
    **dict.fromkeys((
        "spread", "displacement_mean", "displacement_median", "shift_match_units", "movement", "effective_rank",
        "stable_rank", "peak_frequency", "lie_derivative", "lie_ratio", "input_dependence", "perm_equivariance_error",
        "rel_mse", "extrap_rel_mse", "test_loss", "train_loss", "conv_complement_growth", "conv_complement_growth_all",
        "equiv_complement_growth", "equiv_complement_growth_all", "readout_shift_distance",
        *(f"{n}_complement_ratio{a}" for n in ("conv", "equiv") for a in ("", "_all"))), NON_NEGATIVE),
}
# accuracies, drawn in percent: the axis label says so (a measure's own label describes the stored value, 0..1)
_PERCENT_LABELS = {
    "test_acc": "test accuracy (%)", "train_acc": "train accuracy (%)", "cnn_test_acc": "test accuracy (%)",
    "mlp_test_acc": "test accuracy (%)", "dense_test_acc": "test accuracy (%)", "ref_test_acc": "test accuracy (%)",
    "perturbed_test_acc": "test accuracy (%)", "test_acc_2T": "accuracy at 2T / 4T (%)",
    "test_acc_4T": "accuracy at 2T / 4T (%)", "clone_acc": "accuracy on the Gaussian clone (%)",
    "real_acc": "accuracy on the real test set (%)", "qda_acc": "QDA accuracy, real test set (%)",
    "qda_clone_acc": "QDA accuracy, Gaussian clone (%)"}
# the axis labels of the keys that are not a measure's: the trainer's and the procedures'
_LABELS = {
    "test_acc": "test accuracy (%)", "train_acc": "train accuracy (%)", "test_loss": "test loss (nats)",
    "train_loss": "train loss (nats)", "cnn_test_acc": "test accuracy (%)", "mlp_test_acc": "test accuracy (%)",
    "dense_test_acc": "test accuracy (%)", "line_barrier": "test loss barrier (nats)",
    "line_barrier_train": "train loss barrier (nats)", "line_barrier_unaligned": "test loss barrier (nats)",
    "line_error_barrier": "test error barrier", "line_error_barrier_unaligned": "test error barrier",
    "line_barrier_train_unaligned": "train loss barrier (nats)", "conv_subspace_distance": "distance to convolutions",
    "conv_subspace_distance_all": "distance to convolutions", "mlp_steps": "training steps",
    "equiv_subspace_distance": "distance to the shift-equivariant layers",
    "equiv_subspace_distance_all": "distance to the shift-equivariant layers",
    "conv_complement_growth": "||W - P(W)|| / its step-0 value",
    "conv_complement_growth_all": "||W - P(W)|| / its step-0 value",
    "equiv_complement_growth": "||W - P(W)|| / its step-0 value",
    "equiv_complement_growth_all": "||W - P(W)|| / its step-0 value",
    "readout_shift_distance": "distance to a shift-invariant readout", "ntk_cka": "centred kernel alignment (0-1)",
    "ntk_kta": "kernel-target alignment (0-1)", "ntk_input_cka": "centred kernel alignment (0-1)",
    "sparsity": "share of weights pruned", "ref_test_acc": "test accuracy (%)",
    "perturbed_test_acc": "test accuracy (%)", "first_layer_sparsity": "share of weights pruned",
    **dict.fromkeys((f"{n}_complement_ratio{a}" for n in ("conv", "equiv") for a in ("", "_all")),
                    "||W - P(W)||, end / step 0"),
    "ref_kta": "kernel-target alignment (0-1)", "input_kta": "kernel-target alignment (0-1)",
    "ref_input_cka": "centred kernel alignment (0-1)", "conv_subspace_distance_l2": "distance to convolutions",
    "conv_subspace_distance_l3": "distance to convolutions"}
# what each procedure (probe.run's PROCEDURES, by name) writes to procedure.json, or to metrics.jsonl while it trains
_STABILITY_TRACKED = tuple(f"{n}_{what}{s}" for n in ("conv", "equiv") for what in ("subspace_distance",
                           "complement_growth") for s in ("", "_all"))
PROCEDURE_KEYS = {
    "imp": ("sparsity", "first_layer_sparsity", "dense_test_acc"),
    "ecnn": ("cnn_test_acc", "conv_subspace_distance", "conv_subspace_distance_all", "mlp_steps", "mlp_test_acc",
             *(f"{b}{tag}" for tag in ("", "_unaligned") for b in ("line_barrier", "line_barrier_train",
                                                                  "line_error_barrier"))),
    "stability": ("cnn_test_acc", "perturbed_test_acc", *_STABILITY_TRACKED, "conv_subspace_distance_l2",
                  "conv_subspace_distance_l3", *(f"{n}_complement_ratio{s}" for n in ("conv", "equiv")
                                                  for s in ("", "_all")), "readout_shift_distance"),
    "ntk_align": ("ntk_cka", "ntk_kta", "ntk_input_cka", "ref_kta", "ref_test_acc", "input_kta", "ref_input_cka"),
}


def _plain(name: str) -> str:
    return name.split(".")[-1].replace("_", " ")


def _title(key: str) -> str:
    if key not in _TITLES and key.startswith(("delta_", "grad_")):  # the ΔW and pull twins of a measure
        prefix, base = key.split("_", 1)
        return f"{'ΔW' if prefix == 'delta' else 'pull G'}: {_title(base)}"
    return _TITLES.get(key, _plain(key))


def _bounds(key: str) -> tuple[float, float]:
    if key not in _BOUNDS and key.startswith(("delta_", "grad_")):
        return _BOUNDS.get(key.split("_", 1)[1], REAL)
    return _BOUNDS.get(key, REAL)


def _keys() -> dict[str, Key]:
    """Every measure's outputs in registry order, then the trainer's and the procedures' keys."""
    by_procedure: dict[str, tuple[str, ...]] = {}
    for proc, keys in PROCEDURE_KEYS.items():
        for k in keys:
            by_procedure[k] = (*by_procedure.get(k, ()), proc)
    out = {}
    for m in MEASURES.values():
        for k in m.outputs:
            out[k] = Key(k, _title(k), _PERCENT_LABELS.get(k, m.label), _bounds(k), k in _PERCENT_LABELS, m.name,
                         by_procedure.get(k, ()))
    for k in (*_LABELS, *_TITLES, *by_procedure):
        if k not in out:
            out[k] = Key(k, _title(k), _LABELS.get(k, ""), _bounds(k), k in _PERCENT_LABELS, "",
                         by_procedure.get(k, ()))
    return out


KEYS: dict[str, Key] = _keys()


# A null, control or chance level of key X is stored one way: as the key ``X@kind`` beside X (``time_sharing@permuted``,
# ``position_ipr@gaussian``, ``line_barrier@mlps``), in metrics, result.json, procedure.json and the sweeps' summaries;
# `probe analyze`'s report lists a reference's values under ``reference[kind]``. Earlier versions wrote some as
# ``X_random`` or ``X_phase``: :func:`current_keys` renames them when a stored run is read.
OLD_KEYS = {"position_ipr_random": ("position_ipr@gaussian",),
            "position_sharing_random": ("position_sharing@gaussian",),
            "relevant_mass_random": ("relevant_mass@gaussian",),
            "fourier_top_random": ("embed_fourier_top@chance", "neuron_fourier_top@chance"),
            "fourier_peak_random": ("embed_fourier_peak@chance", "neuron_fourier_peak@chance"),
            "tiling_random": ("tiling@random",), "filter_match_phase": ("filter_match@phase",)}


def current_keys(values: dict) -> dict:
    """``values`` (a stored run's keys -> values) with the keys of :data:`OLD_KEYS` written the one way a null is
    stored now, ``X@kind``, each where X itself is stored, in place of the old key. An old null's own ``@init``
    value (``position_ipr_random@init``: a null's null, which says nothing and is no longer written) is left out."""
    out = {}
    for k, v in values.items():
        base = k.removesuffix("@init")
        if base not in OLD_KEYS:
            out[k] = v
        elif base == k:
            out.update({new: v for new in OLD_KEYS[k] if new.split("@")[0] in values})
    return out


def applies(name: str, kind: str) -> bool:
    """Whether measure ``name`` applies to tasks of ``kind`` (image, sequence)."""
    return kind in MEASURES[name].task_kinds


def of_scope(*scopes: str) -> dict[str, Measure]:
    """The measures of the given scopes, in registry order."""
    return {n: m for n, m in MEASURES.items() if m.scope in scopes}


def labels() -> dict[str, str]:
    """A figure's axis label per key (:data:`KEYS`), for the keys that have one, measures' outputs first."""
    return {k: key.label for k, key in KEYS.items() if key.label}


def title(key: str) -> str:
    """A key's panel title in words (``ipr_frac_above`` -> ``share of localized units``); an unknown key: its name
    with ``_`` as spaces, so a new key still gets a readable title."""
    return KEYS[key].title if key in KEYS else _title(key)


def value_range(key: str, scale: float = 1.0) -> tuple[float, float]:
    """The interval ``key``'s values live in, times ``scale`` (100 for accuracies in %); unbounded when unknown."""
    lo, hi = KEYS[key].bounds if key in KEYS else _bounds(key)
    return lo * scale, hi * scale


def percent_keys() -> tuple[str, ...]:
    """The keys figures draw in percent (accuracies)."""
    return tuple(k for k, key in KEYS.items() if key.percent)


def markdown() -> str:
    """The README's measure tables, one per group: measure keys, what high and low mean, where the formula is."""
    out = []
    for group in dict.fromkeys(m.group for m in MEASURES.values()):
        out += [f"#### {group}", "", "| measure | high means | low means | formula |", "| --- | --- | --- | --- |"]
        if group == _MECHANISM:  # the twins: one row per family, not one per measure
            for prefix, what in TWINS.items():
                out.append(f"| `{prefix}_<m>` for every measure m of the first layer and of every layer "
                           f"(`{prefix}_ipr`, `{prefix}_window_mass_3`, ...) | m's high, on {what} | m's low, on "
                           f"{what} | m's formula, on {what} |")
        for m in MEASURES.values():
            if m.group == group and not m.base:
                keys = ", ".join(f"`{k}`" for k in m.outputs)
                out.append(f"| {keys} | {m.high} | {m.low} | `{m.formula}` |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown(), end="")
