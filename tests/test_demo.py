import io

import pytest
from rich.console import Console

from probe.demo import run_demo, sparkline


@pytest.mark.slow
def test_demo_reports_both_accuracies_and_the_first_layer_beside_its_references(tmp_path):
    buf = io.StringIO()
    res = run_demo(tmp_path, steps=60, seed=0, console=Console(file=buf, width=120))
    text = buf.getvalue()
    assert "MLP 40-100-100-10" in text and "CNN" in text and "inputs permuted" in text
    assert set(res["results"]) == {"mlp", "cnn"}
    mlp, cnn = res["results"]["mlp"], res["results"]["cnn"]
    assert mlp["step"] == cnn["step"] == 60
    assert f"{mlp['test_acc']:.1%}" in text and f"{cnn['test_acc']:.1%}" in text  # the table shows the run's numbers
    # the demo's point: at the same budget the CNN is far ahead (measured 0.65 against 0.37 at 60 steps)
    assert cnn["test_acc"] > mlp["test_acc"] + 0.15 and mlp["test_acc"] > 0.2
    assert set(res["references"]) == {"init", "gaussian", "permuted", "phase", "lcn"}
    # ipr measures concentration only, so permuting input positions leaves it unchanged
    assert res["references"]["permuted"]["ipr"] == pytest.approx(res["measures"]["ipr"])
    assert res["measures"]["movement"] > 0
    # a second call reuses the finished runs instead of refusing the existing folders, and says so
    buf = io.StringIO()
    again = run_demo(tmp_path, steps=60, seed=0, console=Console(file=buf, width=80))
    assert again["results"]["mlp"]["test_acc"] == res["results"]["mlp"]["test_acc"]
    assert f"reusing the finished run {tmp_path / 'mnist1d-mlp-s0-60steps'}" in buf.getvalue().replace("\n", "")
    # piped (80 columns), the table keeps the names that the reading below it uses
    assert "ipr_frac_above" in buf.getvalue() and "window_mass_5" in buf.getvalue()
    # another --steps trains runs of its own rather than refusing to resume the finished ones
    buf = io.StringIO()
    other = run_demo(tmp_path, steps=20, seed=0, console=Console(file=buf, width=120))
    assert other["results"]["mlp"]["step"] == 20 and "training mlp" in buf.getvalue()
    assert (tmp_path / "mnist1d-mlp-s0-20steps").is_dir() and (tmp_path / "mnist1d-mlp-s0-60steps").is_dir()


def test_demo_refuses_a_folder_holding_other_options(tmp_path):
    import json

    from probe.config import ConfigError, RunConfig
    from probe.demo import demo_run_dir

    run = demo_run_dir(tmp_path, "mlp", 6000, 0)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(RunConfig(task="mnist1d", steps=6000, lr=0.5).to_dict()))
    with pytest.raises(ConfigError, match="differs in lr.*--out"):
        run_demo(tmp_path, steps=6000, seed=0, console=Console(file=io.StringIO()))


def test_sparkline_scales_to_the_largest_weight():
    assert sparkline([0.0, -1.0, 0.5]) == " █▄"
