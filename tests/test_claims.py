"""Every number the Findings quote with an interval is recomputed from the committed per-run tables (results/):
the claims table (results/claims.csv) against results/TABLE/summary.csv and the docs' text (probe/sweep/claims.py)."""

import csv

import pytest

from probe.sweep import claims


def test_every_claim_recomputes_from_the_committed_tables_and_is_quoted_as_computed():
    rows = claims.read_claims()
    assert rows, "results/claims.csv holds no claims"
    assert claims.check() == []


def _write(tmp_path, summary: str, claim: dict, doc: str):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "summary.csv").write_text(summary)
    (tmp_path / "doc.md").write_text(doc)
    row = {c: "" for c in claims.COLUMNS} | {"doc": "doc.md", "table": "t", "command": "x"} | claim
    with open(tmp_path / "claims.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=claims.COLUMNS)
        w.writeheader()
        w.writerow(row)
    return claims.check(tmp_path / "claims.csv", root=tmp_path)


SUMMARY = ("run,status,model,seed,wm,wm@phase\n"
           "a,done,mlp,0,0.30,0.25\nb,done,mlp,1,0.31,0.25\nc,done,mlp,2,0.29,0.25\n"
           "d,failed,mlp,3,9.0,0.25\ne,done,cnn,0,0.8,0.2\n")


def test_a_correct_claim_passes_and_a_typed_number_that_disagrees_fails(tmp_path):
    # wm - wm@phase over the 3 finished mlp runs: 0.05, 0.06, 0.04 -> mean 0.05, sd 0.01, t 4.303: +-0.0248
    text = "+0.050 (95% CI +0.025 to +0.075, 3 seeds)"
    good = {"claim": "c1", "where": "model=mlp", "measure": "wm", "null": "phase", "effect": "0.050",
            "ci_low": "0.025", "ci_high": "0.075", "seeds": "3", "text": text}
    assert _write(tmp_path, SUMMARY, good, f"The excess is {text}.") == []


def test_a_mismatch_in_the_table_or_the_doc_is_reported(tmp_path):
    text = "+0.050 (95% CI +0.025 to +0.075, 3 seeds)"
    bad = {"claim": "c1", "where": "model=mlp", "measure": "wm", "null": "phase", "effect": "0.045",
           "ci_low": "0.025", "ci_high": "0.075", "seeds": "3", "text": text}
    problems = _write(tmp_path, SUMMARY, bad, "The excess is +0.045-0.050.")
    assert any("effect recomputes as 0.050, the table says 0.045" in p for p in problems)
    assert any("does not quote its text" in p for p in problems)


def test_an_interval_typed_into_the_doc_that_no_claim_gives_is_reported(tmp_path):
    text = "+0.050 (95% CI +0.025 to +0.075, 3 seeds)"
    good = {"claim": "c1", "where": "model=mlp", "measure": "wm", "null": "phase", "effect": "0.050",
            "ci_low": "0.025", "ci_high": "0.075", "seeds": "3", "text": text}
    typed = "0.800 (95% CI 0.790 to 0.810, 3 seeds)"
    problems = _write(tmp_path, SUMMARY, good, f"The excess is {text}; the CNN's {typed}.")
    assert problems == [f"doc.md: quotes {typed!r}, which no claim of results/claims.csv gives"]


def test_an_interval_through_zero_must_be_worded_as_no_effect_detected(tmp_path):
    summary = "run,status,seed,wm,wm@phase\na,done,0,0.30,0.25\nb,done,1,0.20,0.25\nc,done,2,0.27,0.25\n"
    # differences 0.05, -0.05, 0.02: mean 0.0067, interval through 0
    text = "+0.007 (95% CI -0.121 to +0.134, 3 seeds)"
    claim = {"claim": "c0", "where": "", "measure": "wm", "null": "phase", "effect": "0.007", "ci_low": "-0.121",
             "ci_high": "0.134", "seeds": "3", "text": f"window mass {text}"}
    problems = _write(tmp_path, summary, claim, f"window mass {text}")
    assert any(claims.NO_EFFECT in p for p in problems)
    claim["text"] = f"{claims.NO_EFFECT} ({text})"
    (tmp_path / "t").rename(tmp_path / "old")
    (tmp_path / "claims.csv").unlink()
    problems = _write(tmp_path, summary, claim, f"window mass: {claims.NO_EFFECT} ({text})")
    assert problems == []


def test_quote_is_the_canonical_form():
    s = {"n": 5, "mean": 0.0391, "ci_low": 0.0284, "ci_high": 0.0491}
    assert claims.quote(s, True) == "+0.039 (95% CI +0.028 to +0.049, 5 seeds)"
    assert claims.quote(s, False) == "0.039 (95% CI 0.028 to 0.049, 5 seeds)"
    with pytest.raises(KeyError, match="no column"):
        claims.recompute("mnist1d-controls-quick", "nokey=1", "test_acc")


def test_a_null_can_name_another_column_of_the_run(tmp_path):
    # a measure against a column of the same run that is not written MEASURE@NULL (a distance minus the diffusion
    # null, one arm minus a paired arm): d = 0.05, 0.06, 0.04 per run, as for wm - wm@phase above
    summary = ("run,status,seed,dist,diffusion,dist@x\n"
               "a,done,0,0.30,0.25,9\nb,done,1,0.31,0.25,9\nc,done,2,0.29,0.25,9\n")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "summary.csv").write_text(summary)
    s = claims.recompute("t", "", "dist", "diffusion", results=tmp_path)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.05)
    # MEASURE@NULL wins where both exist: "x" reads dist@x (9), not a column named x
    assert claims.recompute("t", "", "dist", "x", results=tmp_path)["mean"] == pytest.approx(0.30 - 9)
    with pytest.raises(KeyError, match="no column"):
        claims.recompute("t", "", "dist", "nothing", results=tmp_path)


def test_a_table_can_name_a_per_seed_file_beside_the_summary(tmp_path):
    # a sample-complexity exponent is one fit per seed (exponents_seeds.csv), not a run's value in summary.csv
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "exponents_seeds.csv").write_text("variant,seed,exponent\nmlp,0,0.30\nmlp,1,0.31\nmlp,2,0.29\n"
                                                       "cnn,0,1.0\n")
    s = claims.recompute("t/exponents_seeds.csv", "variant=mlp", "exponent", results=tmp_path)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.30)
    with pytest.raises(FileNotFoundError):
        claims.recompute("t", "variant=mlp", "exponent", results=tmp_path)  # no summary.csv: the folder is not the file


def test_mechanism_tables_pair_arms_by_seed_and_average_step_ranges(tmp_path):
    # the tables claims read the mechanism experiments from: an arm's measure beside the same seed's other arm,
    # and a seed's mean over a range of steps, on numbers whose answer is known
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "mechanism_tables", Path(__file__).resolve().parents[1] / "scripts" / "mechanism_tables.py")
    mt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mt)
    src = tmp_path / "mechanism"
    src.mkdir()
    (src / "cause.csv").write_text("seed,arm,acc\n0,none,0.6\n0,keep,0.5\n1,none,0.7\n1,keep,0.4\n")
    (src / "step-medium.csv").write_text("seed,step,n_train,dS,dS@random\n" + "".join(
        f"{s},{t},100000,{1e-5 * (t + s)},0\n" for s in (0, 1) for t in (0, 1, 5, 10, 50, 2000)))
    assert sorted(p.parent.name for p in mt.write(src)) == ["mechanism-cause", "mechanism-step-medium"]
    d = claims.recompute("mechanism-cause", "arm=keep", "acc", "none", results=tmp_path)
    assert d["n"] == 2 and d["mean"] == pytest.approx(-0.2)  # -0.1 and -0.3, paired by seed
    r = claims.recompute("mechanism-step-medium", "range=1-10", "dS_e3", "random", results=tmp_path)
    assert r["n"] == 2 and r["mean"] == pytest.approx(0.01 * (16 / 3 + 0.5))  # 1e-5 (t + seed), t = 1, 5, 10; x1000
    assert claims.recompute("mechanism-step-medium", "range=2000-2000", "dS", "", results=tmp_path)["n"] == 2
    assert claims.recompute("mechanism-step-medium", "step=0", "dS", "", results=tmp_path)["n"] == 2


def test_new_claims_are_recomputed_rows_and_rewriting_keeps_the_table(tmp_path):
    """claim_row quotes what the table recomputes ("no effect detected" for a difference whose interval holds 0);
    write_claims replaces rows by id and appends new ones, leaving every other row as it was, byte for byte."""
    import shutil

    from probe.sweep import claims

    path = tmp_path / "claims.csv"
    shutil.copyfile(claims.CLAIMS, path)
    claims.write_claims([], path)
    assert path.read_bytes() == claims.CLAIMS.read_bytes()
    old = claims.read_claims(path)
    first = dict(old[0])
    row = claims.claim_row(first["claim"], first["doc"], first["table"], first["where"], first["measure"],
                           first["null"], first["command"])
    assert row["text"] in first["text"] and row["effect"] == first["effect"]
    extra = claims.claim_row("new-claim", "docs/findings.md", first["table"], first["where"], first["measure"],
                             first["measure"])  # a measure minus itself: 0, interval [0, 0]
    assert extra["text"].startswith(claims.NO_EFFECT) and extra["effect"] in ("0.000", "-0.000")
    claims.write_claims([extra, {**first, "command": "changed"}], path)
    new = claims.read_claims(path)
    assert [r["claim"] for r in new] == [r["claim"] for r in old] + ["new-claim"]
    assert new[0]["command"] == "changed" and new[1:-1] == old[1:]


def test_a_claims_table_quotes_what_its_rows_recompute(tmp_path):
    """claims_table writes one cell per (group, measure): the recomputed quote, '-' where no run has the measure;
    a doc holding the table passes the check with the rows, and fails once a cell is typed differently."""
    import shutil

    from probe.sweep import claims

    res = tmp_path / "results"
    shutil.copytree(claims.RESULTS / "ecnn-quick", res / "ecnn-quick")
    rows, md = claims.claims_table("t", "doc.md", "ecnn-quick", "cmd", {"MLP": "variant=mlp", "CNN": "variant=cnn"},
                                   [("acc", "test_acc", ""), ("wm", "window_mass_3", "phase"), ("no", "nosuch", "")],
                                   results=res)
    assert [r["claim"] for r in rows] == ["t-mlp-acc", "t-mlp-wm", "t-cnn-acc", "t-cnn-wm"]
    assert md.splitlines()[2].endswith(" | - |") and all(r["text"] in md for r in rows)
    (tmp_path / "doc.md").write_text("Table:\n\n" + md + "\n")
    with open(res / "claims.csv", "w") as f:
        f.write(",".join(claims.COLUMNS) + "\n")
    claims.write_claims(rows, res / "claims.csv")
    assert claims.check(res / "claims.csv", tmp_path) == []
    (tmp_path / "doc.md").write_text(md.replace(rows[0]["text"], "0.700 (95% CI 0.690 to 0.710, 5 seeds)"))
    assert any("does not quote" in p for p in claims.check(res / "claims.csv", tmp_path))


def test_the_medium_sections_hold_the_tables_their_script_prints(capsys):
    # scripts/medium_claims.py builds each medium-scale table of docs/findings.md (and the README's sequence table)
    # from results/: the doc must hold the table as printed (a cell typed by hand, or a table left from an older
    # run, fails here)
    import importlib.util

    spec = importlib.util.spec_from_file_location("medium_claims", claims.ROOT / "scripts" / "medium_claims.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for section, name in script.CHECKED.items():
        doc = " ".join((claims.ROOT / name).read_text().split())
        assert script.main([section, "--dry-run"]) == 0
        tables = capsys.readouterr().out.split("\n\n")
        for table in tables:
            if table.startswith("|"):
                assert " ".join(table.split()) in doc, f"{section}: a table differs from {name}"
