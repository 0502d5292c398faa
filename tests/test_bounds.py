"""Bounded inputs and one-line errors: crafted checkpoints, sizes that cannot fit, damaged files a run folder or a
sweep folder holds, signals at the edges. Each test here failed before its fix (said in its docstring)."""

import json
import time

import pytest
import torch

from probe.run.checkpoint import CheckpointError, load_checkpoint, nested_size


def shared_lists(levels: int):
    x = [torch.zeros(2)]
    for _ in range(levels):
        x = [x, x]
    return x


# -- item 8: nested containers sharing references --------------------------------------------------------------
def test_nested_size_counts_every_path_and_visits_each_object_once():
    """Exact on constructions: k levels of [x, x] over [tensor] hold 2^(k+1) - 1 lists and 2^k tensors."""
    for k in (0, 1, 5, 20):
        assert nested_size(shared_lists(k)) == (2 ** (k + 1) - 1 + 2 ** k, k + 1)
    assert nested_size({"a": [1, 2], "b": {"c": 3}}) == (6, 2)
    assert nested_size(7) == (1, 0)
    t0 = time.perf_counter()
    n, d = nested_size(shared_lists(60))
    assert n > 2 ** 60 and d == 61 and time.perf_counter() - t0 < 1
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="holds itself"):
        nested_size(loop)


def test_a_small_file_of_shared_lists_is_refused_at_once(tmp_path):
    """Before: a 2 KB file of lists sharing references 60 levels deep loaded in 1 ms and then hung every walk over
    its tensors (analyze, check, --resume), which follow each of its 2^60 paths."""
    p = tmp_path / "nest.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "junk": shared_lists(60)}, p)
    assert p.stat().st_size < 10_000
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="counted along every path"):
        load_checkpoint(p)
    assert time.perf_counter() - t0 < 5
    deep = []
    for _ in range(150):
        deep = [deep]
    torch.save({"state_dict": {"w": torch.zeros(2)}, "junk": deep}, p)
    with pytest.raises(CheckpointError, match="nested 152 levels"):
        load_checkpoint(p)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "junk": shared_lists(8)}, p)
    assert nested_size(load_checkpoint(p)["junk"])[1] == 9  # a little sharing loads


# -- items 9 and 10: sizes counted before anything is built ------------------------------------------------------
from probe.config import ConfigError, RunConfig  # noqa: E402
from probe.tasks import make_task  # noqa: E402


@pytest.mark.parametrize("task,opts", [
    ("nlgp", {"size": 200_000}), ("mqar", {"vocab": 10**8}), ("mqar", {"length": 10**9}), ("mqar", {"n_train": 10**12}),
    ("modadd", {"p": 10**7}), ("add", {"D": 10**9}), ("mnist1d", {"num_samples": 10**9}),
], ids=lambda v: str(v))
def test_a_task_too_big_for_memory_is_refused_before_building(task, opts):
    """Before: each allocated until a MemoryError / DefaultCPUAllocator traceback, or ran for minutes."""
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="needs about .* more than the"):
        make_task(task, opts)
    assert time.perf_counter() - t0 < 2


def test_the_budget_follows_rlimit_and_the_environment(monkeypatch):
    """A task that fits by default is refused under a smaller budget, and the message names the options."""
    make_task("add", {"D": 1000, "n_train": 100, "n_test": 100})
    monkeypatch.setenv("PROBE_MAX_BYTES", "1e5")
    with pytest.raises(ConfigError, match="task add: building it with n_train, n_test, D"):
        make_task("add", {"D": 1000, "n_train": 100, "n_test": 100})


def test_every_task_and_preset_at_its_defaults_fits():
    """The positive control: the bounds refuse nothing probe ships (every task's defaults, every preset)."""
    from probe.bounds import check_task_size
    from probe.sweep import spec as sw
    from probe.tasks import task_specs

    for name, spec in task_specs().items():
        check_task_size(name, {}, spec.options())
    for _name, path in sw.presets().items():
        raw = sw.load_spec(path)
        for scale in [s for s in sw.SCALES if s in raw] or [None]:
            sw.expand(raw, scale)


def test_negative_counts_are_refused():
    """Before: n_train=-1 trained silently on the whole split."""
    with pytest.raises(ConfigError, match="n_train must be >= 0, got -1"):
        make_task("mnist1d", {"n_train": -1})


@pytest.mark.parametrize("field,value,match", [
    ("steps", 2**64, "--steps must be <= 1e\\+12"), ("threads", 100_000, "--threads must be <= 1024"),
    ("batch_size", 10**13, "--batch-size must be <="),
])
def test_counts_beyond_any_run_are_refused_in_the_config(field, value, match):
    """Before: steps >= 2^64 was a TypeError in log10; --threads 100000 aborted inside libgomp."""
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict({field: value})


@pytest.mark.parametrize("opts,match", [
    ({"stride": 0}, "stride and channels must be >= 1"), ({"kernel": 100_000}, "kernel must be in \\[1, 81\\]"),
    ({"layers": 100_000}, "layers must be <= 1000"), ({"channels": 10**6}, "needs about"),
])
def test_cnn_options_that_cannot_build_are_refused(opts, match):
    """Before: stride=0 raised ZeroDivisionError; kernel=100000 and layers=100000 ran past 90 s."""
    from probe.models import build_model

    task = make_task("mnist1d")
    with pytest.raises(ConfigError, match=match):
        build_model("cnn", task, 100, 2, "standard", opts)


def test_a_batch_too_big_for_memory_is_refused():
    """Before: a fresh-sampling task drew a batch of 10^9 until the allocator failed."""
    from probe.bounds import check_model_size

    check_model_size("mlp", 1600, 2, 100, 2, {}, batch_size=1000)
    with pytest.raises(ConfigError, match="a batch of 1,000,000,000"):
        check_model_size("mlp", 1600, 2, 100, 2, {}, batch_size=10**9)


# -- items 13 and 16: specs and config files that cannot be read --------------------------------------------------
def test_a_huge_grid_is_counted_not_built(tmp_path):
    """Before: `probe sweep spec.toml --dry-run` with 10^6 grid points ran past 70 s at 1 GB."""
    from probe.sweep import spec as sw

    spec = {"name": "big", "base": {"task": "mnist1d"}, "grid": {"seed": list(range(1000)), "lr": [0.1] * 1000}}
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="1,000,000 runs \\(1000 x 1000\\), more than 10,000"):
        sw.expand(spec)
    with pytest.raises(ConfigError, match="10,000,000,000 runs"):
        sw.expand({"name": "b", "grid": {"seed": list(range(10**5)), "lr": list(range(10**5))}})
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("extra,match", [
    ({"final_measures": 5}, "final_measures must be a list"),
    ({"variants": [{"name": "x" * 300, "model": "mlp"}]}, "run folder name x+\\.\\.\\. is 300 bytes"),
])
def test_spec_values_of_the_wrong_kind_get_one_line(extra, match):
    """Before: final_measures = 5 was a TypeError; a 300-byte run name an OSError when its folder was made."""
    from probe.sweep import spec as sw

    with pytest.raises(ConfigError, match=match):
        sw.expand({"name": "s", "base": {"task": "mnist1d"}, **extra})


@pytest.mark.parametrize("name,text", [("deep.json", "[" * 100_000), ("deep.toml", "a = " + "[" * 5000 + "]" * 5000)])
def test_config_nested_too_deeply_is_one_line(tmp_path, name, text):
    """Before: RecursionError tracebacks from json / tomllib (train --config, sweeps, check, resume)."""
    from probe.config import load_config_file

    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config_file(tmp_path / name)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, slow_setup):
    from probe.run.loop import run_training

    out = tmp_path_factory.mktemp("run") / "r"
    run_training(RunConfig(task="mnist1d", width=16, depth=1, steps=20, batch_size=50, eval_every=10, log_every=10,
                           checkpoints=3), out, progress=False)
    return out


def _copy(run, tmp_path):
    import shutil

    shutil.copytree(run, tmp_path / "r")
    return tmp_path / "r"


@pytest.mark.slow
@pytest.mark.parametrize("text,match", [("{bad", "not readable as JSON"), ("[1, 2]", "expected a JSON object"),
                                        ('{"gaussian": {"ipr": "x"}}', "holds values that are not numbers")])
def test_a_damaged_reference_json_is_one_line(finished_run, tmp_path, text, match):
    """Before: figures raised JSONDecodeError, AttributeError ('list' has no items) or ValueError (float('x'))."""
    from probe.run.tracking import read_references

    run = _copy(finished_run, tmp_path)
    (run / "reference.json").write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_references(run)


@pytest.mark.slow
def test_a_damaged_task_json_and_a_metrics_folder_are_one_line(finished_run, tmp_path):
    """Before: analyze raised JSONDecodeError on task.json; --resume an IsADirectoryError on metrics.jsonl as a
    folder (after training the steps again)."""
    from probe.analysis.report import analyze_checkpoint
    from probe.run.loop import run_training

    run = _copy(finished_run, tmp_path)
    (run / "task.json").write_text("not json{")
    with pytest.raises(ConfigError, match="task.json: not readable as JSON"):
        analyze_checkpoint(run, data=False)
    (run / "checkpoints" / "step_20.pt").unlink()
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    with pytest.raises(ConfigError, match="metrics.jsonl: is a folder"):
        run_training(RunConfig.from_dict(json.loads((run / "config.json").read_text())), run, progress=False,
                     resume=True)
    assert [p.name for p in (run / "checkpoints").iterdir()] != []  # nothing removed


@pytest.mark.slow
def test_check_reads_a_config_nested_too_deeply_as_a_problem(finished_run, tmp_path):
    """Before: `probe check` raised RecursionError on 100,000 nested brackets in config.json."""
    from probe.run.check import check_run

    run = _copy(finished_run, tmp_path)
    (run / "config.json").write_text("[" * 100_000)
    rep = check_run(run)
    assert not rep.ok and any("config.json" in line for line in rep.lines())


# -- item 15: analyze on weights that are not this run's --------------------------------------------------------
def test_a_state_dict_with_integer_keys_is_one_line(tmp_path):
    """Before: AttributeError ('int' object has no attribute 'endswith')."""
    from probe.analysis.load import read_source

    torch.save({0: torch.zeros(16, 40), 1: torch.zeros(10, 16)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="keys are not all parameter names \\(a key 0\\)"):
        read_source(tmp_path / "sd.pt", (1, 40))


@pytest.mark.slow
def test_a_wider_checkpoint_in_a_run_folder_is_measured_without_the_folders_start(finished_run, tmp_path):
    """Before: a width-32 checkpoint as the last step of a width-16 run raised load_state_dict's size mismatch
    from the step-0 init reference. Now: measured, with no init reference and a note naming the mismatch;
    --all-steps (one model for every step) leaves it out with a note naming its step."""
    from probe.analysis.report import analyze_checkpoint, analyze_steps
    from probe.run.loop import run_training

    run = _copy(finished_run, tmp_path)
    wide = tmp_path / "wide"
    run_training(RunConfig(task="mnist1d", width=32, depth=1, steps=2, checkpoints=2, eval_every=1, log_every=1),
                 wide, progress=False)
    (run / "checkpoints" / "step_20.pt").write_bytes((wide / "checkpoints" / "step_2.pt").read_bytes())
    rep = analyze_checkpoint(run, data=False)
    assert rep.step == 2 and "init" not in rep.reference or not rep.reference.get("init")
    # the step-0 checkpoint is another model's start: named by the config that differs (its width)
    assert any("no init reference" in n and "width" in n for n in rep.notes)
    assert not any("no step-0 checkpoint" in n for n in rep.notes)
    # --all-steps measures every step with the run's first model: the other run's checkpoint is left out, named
    reports = analyze_steps(run, data=False)
    assert 2 not in [r.step for r in reports] and any("step(s) 20 left out" in n for n in reports[0].notes)


# -- item 16: damaged sweep folders, long names ---------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory, slow_setup):
    from probe.sweep import execute, spec as sw

    out = tmp_path_factory.mktemp("sweep") / "sw"
    s = sw.expand({"name": "ok", "base": {"task": "mnist1d", "steps": 2, "width": 8, "depth": 1, "checkpoints": 2}})
    execute.run_sweep(s, out, "local", 1, {}, None)
    return s, out


@pytest.mark.slow
@pytest.mark.parametrize("text", ["not json", "[1]", '{"runs": 5, "columns": []}', '{"runs": [{"name": 3}]}'])
def test_a_damaged_sweep_json_is_one_line(sweep_folder, tmp_path, text):
    """Before: JSONDecodeError, AttributeError, TypeError or KeyError from the restart and from --summary."""
    import shutil

    from probe.sweep import execute, summary

    s, src = sweep_folder
    out = tmp_path / "sw"
    shutil.copytree(src, out)
    (out / "sweep.json").write_text(text)
    with pytest.raises(ConfigError, match="sweep.json"):
        summary.summarize(out)
    with pytest.raises(ConfigError, match="sweep.json: damaged|holds sweep None"):  # an object: another sweep's
        execute.prepare(s, out)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["not json", "[1]", '{"config": 5}'])
def test_a_damaged_sweep_run_json_is_one_line_and_the_run_is_kept(sweep_folder, tmp_path, text):
    """Before: JSONDecodeError / TypeError / AttributeError when the sweep was started again."""
    import shutil

    from probe.sweep import execute

    s, src = sweep_folder
    out = tmp_path / "sw"
    shutil.copytree(src, out)
    (out / "run" / "sweep_run.json").write_text(text)
    with pytest.raises(ConfigError, match="sweep_run.json: damaged"):
        execute.prepare(s, out)
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == ["step_0.pt", "step_2.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("text", ["[1]", '{"measures": "abc"}'])
def test_summary_skips_a_procedure_or_result_json_of_the_wrong_kind(sweep_folder, tmp_path, text):
    """Before: --summary raised AttributeError ('list' has no get) or on a string's items."""
    import shutil

    from probe.sweep import summary

    _, src = sweep_folder
    out = tmp_path / "sw"
    shutil.copytree(src, out)
    (out / "run" / "procedure.json").write_text(text)
    (out / "run" / "result.json").write_text(text)
    df = summary.summarize(out)
    assert list(df["run"]) == ["run"] and "test_acc" in df.columns


def test_an_out_name_over_255_bytes_is_one_line(tmp_path):
    """Before: OSError (File name too long) from inside training."""
    from probe.run.loop import run_training

    with pytest.raises(ConfigError, match="a name of 256 bytes"):
        run_training(RunConfig(steps=1), tmp_path / ("a" * 256), progress=False)


# -- item 17: signals at the edges ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("where", ["write_run_files", "finish"])
def test_sigterm_outside_the_training_loop_exits_143_with_a_line(tmp_path, where):
    """Before: SIGTERM while the run files were written, or while reference.json was written after the last
    checkpoint, killed the process with no line (exit -15, not 143): training's handler covers the loop only."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal, sys
        import probe.run.loop as loop
        where = {where!r}
        if where == "write_run_files":
            real = loop.write_run_files
            def patched(run):
                os.kill(os.getpid(), signal.SIGTERM)
                return real(run)
            loop.write_run_files = patched
        else:
            real = loop.tracking_hooks  # (run_training calls the name it imported)
            def hooks(run):
                out = list(real(run))
                class Dying:
                    def __call__(self, step, model):
                        return {{}}
                    def finish(self, model):
                        os.kill(os.getpid(), signal.SIGTERM)
                return [*out, Dying()]
            loop.tracking_hooks = hooks
        sys.argv = ["probe", "train", "--task", "mnist1d", "--width", "8", "--depth", "1", "--steps", "4",
                    "--checkpoints", "2", "-q", "--out", {str(tmp_path / "r")!r}]
        from probe.cli import main
        main()
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 143, (r.returncode, r.stderr[-500:])
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith("interrupted")


def test_a_sweep_run_whose_task_cannot_fit_is_refused_before_any_runs():
    """Before: the run was expanded, listed by --dry-run, and failed inside its worker."""
    from probe.sweep import spec as sw

    with pytest.raises(ConfigError, match="run size=200000: task nlgp: building it"):
        sw.expand({"name": "h", "base": {"task": "nlgp"}, "grid": {"task_opts.size": [200_000]}})
