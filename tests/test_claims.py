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
