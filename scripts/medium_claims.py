"""The medium-scale Findings tables (and the README's sequence table) and their claims, from the committed
per-run tables (results/NAME/).

Each section of docs/findings.md at medium scale quotes tables printed here: every cell is a claim row
(probe/sweep/claims.py) recomputed from results/NAME/summary.csv (or a per-seed file beside it), so the doc and
the table cannot drift. Run after a sweep and ``python -m probe.sweep.claims --collect SWEEP NAME``:

    python scripts/medium_claims.py data-size        # prints the markdown tables, writes the dsm-* claims
    python scripts/medium_claims.py patches          # the patches-controls lr 1e-3 grid (pc-*)
    python scripts/medium_claims.py width            # width-parametrization, and its patches runs at lr 0.05 (wpm-*)
    python scripts/medium_claims.py augmentation     # augmentation, and the wide MLP on patches at lr 1e-3 (aug[mp]-*)
    python scripts/medium_claims.py seq              # README.md, "Routing on sequence tasks" (seq-*)

Paste the printed tables into the section (or check that they match); tests/test_claims.py then fails on any
quoted number that the tables no longer give.
"""

from __future__ import annotations

import argparse
import sys

from probe.sweep.claims import claim_row, claims_table, write_claims

DOC = "docs/findings.md"


def _command(target: str, name: str) -> str:
    """What regenerates results/NAME/: the sweep (TARGET: a preset at its scale, or a spec, whose runs go to
    runs/sweeps/NAME), its summary, and the copy into results/."""
    out = "" if target.startswith("--preset") else f" --out runs/sweeps/{name}"
    return (f"probe sweep {target} --jobs 2{out}; probe sweep runs/sweeps/{name} --summary; "
            f"python -m probe.sweep.claims --collect runs/sweeps/{name} {name}")


def _size_grid(prefix: str, table: str, command: str, sizes: dict[str, str], models: dict[str, str],
               every: list[tuple[str, str, str]], mlps: list[str], first_layer: list[tuple[str, str, str]]):
    """A data-size grid's section: a table of ``every`` cell for every model at every size (rows ``LABEL, n =
    SIZE``), a table of ``first_layer`` cells for the ``mlps``, and each model's sample-complexity exponent (from
    ``TABLE/exponents_seeds.csv``). Returns the claims rows and the printed parts."""
    def rows_of(labels):
        return {f"{m}, n = {s}": f"variant={models[m]};task_opts.n_train={k}" for m in labels for s, k in sizes.items()}

    rows, out = [], []
    for labels, cells in ((list(models), every), (mlps, first_layer)):
        r, md = claims_table(prefix, DOC, table, command, rows_of(labels), cells)
        rows += r
        out.append(md)
    exps = []
    for label, v in models.items():
        row = claim_row(f"{prefix}-exponent-{v}", DOC, f"{table}/exponents_seeds.csv", f"variant={v}", "exponent", "",
                        command)
        rows.append(row)
        exps.append(f"{label} {row['text']}")
    out.append("Exponents: " + "; ".join(exps))
    return rows, out


def data_size() -> tuple[list[dict], list[str]]:
    command = _command("--preset data-size --scale medium", "data-size-medium")
    return _size_grid(
        "dsm", "data-size-medium", command,
        {"250": "250", "1000": "1000", "4000": "4000", "16,000": "16000", "100,000": "0"},
        {"MLP": "mlp", "MLP 1024": "mlp-1024", "bottleneck": "bottleneck", "CNN": "cnn", "LCN": "lcn"},
        [("test acc", "test_acc", ""), ("window_mass_3", "window_mass_3", ""),
         ("minus phase", "window_mass_3", "phase"), ("minus permuted", "window_mass_3", "permuted")],
        ["MLP", "MLP 1024", "bottleneck"],
        [("ipr minus init seeds", "ipr", "init_seeds"), ("ipr minus Gaussian", "ipr", "gaussian"),
         ("spread minus phase, pixels", "spread", "phase"), ("shift_match minus phase", "shift_match", "phase"),
         ("movement", "movement", "")])


def patches() -> tuple[list[dict], list[str]]:
    command = _command("docs/specs/patches-controls-lr1e-3.toml", "patches-controls-lr1e-3")
    # (no ipr column: on 256 pixels it is ~1/256 and three decimals cannot tell it from its nulls)
    return _size_grid(
        "pc", "patches-controls-lr1e-3", command,
        {"500": "500", "2000": "2000", "10,000": "10000", "100,000": "100000"},
        {"linear": "linear-lr1e-3", "MLP 100": "mlp-lr1e-3", "MLP 1024": "mlp-1024-lr1e-3", "CNN": "cnn-lr1e-3"},
        [("test acc", "test_acc", ""), ("window_mass_5", "window_mass_5", ""),
         ("minus phase", "window_mass_5", "phase"), ("minus permuted", "window_mass_5", "permuted"),
         ("shift_match minus phase", "shift_match", "phase"), ("shift_match minus lcn", "shift_match", "lcn")],
        ["MLP 100", "MLP 1024"],
        [("spread minus phase, pixels", "spread", "phase"), ("conv_distance_5 minus lcn", "conv_distance_5", "lcn"),
         ("movement", "movement", "")])


def width() -> tuple[list[dict], list[str]]:
    table = "width-parametrization-medium"
    command = _command("--preset width-parametrization --scale medium", "width-parametrization-medium")
    cells = [("test acc", "test_acc", ""), ("movement", "movement", ""), ("ipr minus init seeds", "ipr", "init_seeds"),
             ("window_mass_3 minus phase", "window_mass_3", "phase"), ("spread minus phase, pixels", "spread", "phase")]
    rows, out = [], []
    for data, label in (("nlgp", "NLGP"), ("nlgp-gauss", "its Gaussian clone"), ("mnist1d", "MNIST-1D")):
        groups = {f"{label}, width {w}, {p}": f"data={data};width={w};param={p}"
                  for w in (32, 256, 1024, 4096) for p in ("standard", "mean-field")}
        r, md = claims_table("wpm", DOC, table, command, groups, cells)
        rows += r
        out.append(md)
    table = "width-patches-lr0.05"
    command = _command("docs/specs/width-patches-lr0.05.toml", "width-patches-lr0.05")
    groups = {f"patches, width {w}, {p}": f"width={w};param={p}"
              for w in (32, 256, 1024, 4096) for p in ("standard", "mean-field")}
    # (no ipr column: on 256 pixels it is ~1/256 and three decimals cannot tell it from its nulls)
    r, md = claims_table("wpm", DOC, table, command, groups, [c for c in cells if c[1] != "ipr"])
    rows += r
    out.append(md)
    return rows, out


def augmentation() -> tuple[list[dict], list[str]]:
    table = "augmentation-medium"
    command = _command("--preset augmentation --scale medium", "augmentation-medium")
    ks = (0, 2, 5, 10)
    function = [("test acc", "test_acc", ""), ("shift_consistency_1", "shift_consistency_1", ""),
                ("minus noise", "shift_consistency_1", "noise_consistency_1"), ("lie_ratio", "lie_ratio", ""),
                ("lie_ratio minus init", "lie_ratio", "init")]
    fields = [("window_mass_3", "window_mass_3", ""), ("minus phase", "window_mass_3", "phase"),
              ("minus permuted", "window_mass_3", "permuted"), ("spread minus phase, pixels", "spread", "phase"),
              ("shift_match minus phase", "shift_match", "phase"), ("shift_match minus lcn", "shift_match", "lcn")]
    rows, out = [], []
    # (on patches the preset's wide MLP at lr 1e-2 does not train; its place is the same MLP at lr 1e-3, below)
    for data, prefix, models in (("mnist1d", "augm", {"MLP 100": "mlp", "MLP 2048": "mlp-wide", "CNN": "cnn"}),
                                 ("patches", "augp", {"MLP 100": "mlp", "CNN": "cnn"})):
        for labels, cells in ((list(models), function), ([m for m in models if m != "CNN"], fields)):
            groups = {f"{m}, k = {k}": f"variant={models[m]};data={data};task_opts.augment_shift={k}"
                      for m in labels for k in ks}
            r, md = claims_table(prefix, DOC, table, command, groups, cells)
            rows += r
            out.append(md)
    # the preset's wide MLP on patches at lr 1e-2, at the smallest and largest shift only: it does not train
    groups = {f"MLP 2048 (lr 1e-2), k = {k}": f"variant=mlp-wide;data=patches;task_opts.augment_shift={k}"
              for k in (0, 10)}
    r, md = claims_table("augp", DOC, table, command, groups, [("test acc", "test_acc", ""),
                                                              ("train acc", "train_acc", ""),
                                                              ("train loss", "train_loss", "")])
    rows += r
    out.append(md)
    table = "augmentation-wide-lr1e-3"
    command = _command("docs/specs/augmentation-wide-patches-lr1e-3.toml", "augmentation-wide-lr1e-3")
    groups = {f"MLP 2048 (lr 1e-3), k = {k}": f"task_opts.augment_shift={k}" for k in ks}
    for cells in (function, fields):
        r, md = claims_table("augp", DOC, table, command, groups, cells)
        rows += r
        out.append(md)
    return rows, out


def seq() -> tuple[list[dict], list[str]]:
    """The README's "Routing on sequence tasks" (docs/specs/seq-results.toml, 3 seeds)."""
    table = "seq-results"
    command = _command("docs/specs/seq-results.toml", "seq-results")
    rows, out = [], []
    groups = {"mqar, 2-layer transformer": "variant=mqar-transformer", "mqar, flattened MLP 3 x 1024":
              "variant=mqar-mlp", "reverse, MLP 1 x 256": "variant=reverse-mlp"}
    cells = [("test acc", "test_acc", ""), ("routing_accuracy", "routing_accuracy", ""),
             ("minus init", "routing_accuracy", "init"), ("routing_accuracy_value", "routing_accuracy_value", ""),
             ("intervention_follow", "intervention_follow", ""), ("input_dependence", "input_dependence", ""),
             ("attn_routing_accuracy", "attn_routing_accuracy", "")]
    for g, c in ((groups, cells),
                 ({"modadd, MLP 1 x 512": "variant=modadd-mlp", "modadd, 1-layer transformer":
                   "variant=modadd-transformer"},
                  [("test acc", "test_acc", ""), ("embed_fourier_peak", "embed_fourier_peak", ""),
                   ("minus chance", "embed_fourier_peak", "chance"), ("neuron_fourier_peak", "neuron_fourier_peak", ""),
                   ("neuron_fourier_top", "neuron_fourier_top", ""),
                   ("minus its chance", "neuron_fourier_top", "chance")])):
        r, md = claims_table("seq", "README.md", table, command, g, c)
        rows += r
        out.append(md)
    return rows, out


SECTIONS = {"data-size": data_size, "patches": patches, "width": width, "augmentation": augmentation, "seq": seq}
# the sections the docs quote from here, and the doc that quotes each (tests/test_claims.py holds it to them)
CHECKED = {"data-size": DOC, "patches": DOC, "width": DOC, "augmentation": DOC, "seq": "README.md"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("section", choices=sorted(SECTIONS))
    ap.add_argument("--dry-run", action="store_true", help="print the tables, write no claims")
    args = ap.parse_args(argv)
    try:
        rows, tables = SECTIONS[args.section]()
    except (OSError, KeyError) as e:
        print(f"error: {e} (run the sweep, its --summary and claims --collect first)", file=sys.stderr)
        return 1
    print("\n\n".join(tables))
    if not args.dry_run:
        write_claims(rows)
        print(f"\n{len(rows)} claims written to results/claims.csv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
