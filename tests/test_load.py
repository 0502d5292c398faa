"""probe.analysis.load: the one loader from a run folder, checkpoint or state_dict to config, task, model, layers;
and the run folder's own readers (probe.run.folder) that every tool shares."""

import json

import numpy as np
import pytest
import torch

from probe.analysis.load import checkpoint_at, first_layer, load_run
from probe.config import ConfigError, RunConfig
from probe.run.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from probe.run.folder import run_state
from probe.run.metrics_file import last_values, read_metrics
from probe.run.loop import run_training, train_or_resume
from probe.seeding import STRIDE, stream
from probe.tasks import make_task

CFG = RunConfig(task="mnist1d", model="cnn", width=8, steps=20, eval_every=10, log_every=10, checkpoints=2,
                device="cpu", model_opts={"channels": 4, "layers": 1, "stride": 1})


@pytest.fixture(scope="module")
def run(tmp_path_factory, slow_setup):
    out = tmp_path_factory.mktemp("load") / "cnn"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    run_training(CFG, out, progress=False)
    torch.set_num_threads(n)
    return out


def test_load_run_rebuilds_config_task_model_and_layers_of_any_step(run):
    last = load_run(run)
    assert last.config == CFG and last.step == 20 and last.geometry.spatial == (40,)
    assert last.task.x_test.shape[1] == 40
    # the first layer is the CNN's conv written densely: it is what the model computes on its inputs
    x = last.task.x_test[:5]
    conv = last.model.layers[0](x[:, None, :]).flatten(1).detach().double().numpy()
    bias = last.model.layers[0].bias.detach().double().numpy().repeat(40)
    assert np.allclose(x.double().numpy() @ last.first_layer.T + bias, conv, atol=1e-5)
    assert next(iter(last.layers)) == "layers.0.dense"
    init = load_run(run, 0)
    assert init.step == 0 and not np.array_equal(init.first_layer, last.first_layer)
    W, geo = first_layer(run, 0)
    assert np.array_equal(W, init.first_layer) and geo == init.geometry


def test_checkpoint_at_names_the_steps_a_run_has(run):
    assert checkpoint_at(run) == list_checkpoints(run)[-1][1]
    assert checkpoint_at(run, 0).name == "step_0.pt"
    with pytest.raises(ConfigError, match=r"no checkpoint at step 7 \(has 0, 20\)"):
        checkpoint_at(run, 7)
    with pytest.raises(ConfigError, match="a checkpoint file has one step"):
        checkpoint_at(checkpoint_at(run), 0)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        checkpoint_at(run.parent)


def test_a_plain_state_dict_loads_without_model_or_task(tmp_path):
    sd = {"0.weight": torch.randn(6, 12), "0.bias": torch.zeros(6), "2.weight": torch.randn(3, 6)}
    torch.save(sd, tmp_path / "sd.pt")
    loaded = load_run(tmp_path / "sd.pt", input_shape=(1, 12))
    assert loaded.model is None and loaded.task is None and list(loaded.layers) == ["0", "2"]
    assert np.array_equal(loaded.first_layer, sd["0.weight"].double().numpy())


def test_the_run_folder_reads_its_metrics_and_state(run, tmp_path):
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert last_values(run)["step"] == 20 and "test_acc" in last_values(run)
    assert run_state(run, 20) == "done" and run_state(run, 40) == "partial" and run_state(tmp_path, 20) == "fresh"
    # a damaged line is skipped, never the good rows after it; a last row cut short by a crash is left out
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "a": 1}) + "\n{\"step\": 1\n" + '{"step": 2}\n{"st')
    assert read_metrics(tmp_path) == [{"step": 0, "a": 1}, {"step": 2}]


def test_train_or_resume_skips_a_finished_run_and_trains_a_given_task(run, tmp_path):
    before = load_checkpoint(checkpoint_at(run))["state_dict"]
    assert train_or_resume(CFG, run)["step"] == 20  # finished: nothing is trained again
    assert torch.equal(load_checkpoint(checkpoint_at(run))["state_dict"]["layers.0.weight"], before["layers.0.weight"])
    task = make_task("mnist1d", {"n_train": 200}, seed=0)
    cfg = CFG.replace(model="mlp", model_opts={}, steps=10, task_opts={"n_train": 200})
    row = train_or_resume(cfg, tmp_path / "given", task=task)
    assert row["step"] == 10 and json.loads((tmp_path / "given" / "task.json").read_text())["n_train"] == 200


def test_seeded_streams_are_reproducible_and_distinct():
    a, b = stream(3, 5), stream(3, 5)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=stream(3, 5)), torch.rand(4, generator=stream(3, 6)))
    assert stream(1, 0).initial_seed() == STRIDE


def test_outside_checkpoints_wrapped_conv_first_with_their_initial_weights(tmp_path):
    import torch.nn as nn

    from probe.analysis.load import parse_input_shape
    from probe.analysis.report import analyze_checkpoint

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3))
    init = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(0.5)
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "lightning.pt")  # wrapped, as trainers save
    torch.save(init, tmp_path / "init.pt")
    rep = analyze_checkpoint(tmp_path / "lightning.pt", input_shape=(1, 6, 6), init=tmp_path / "init.pt")
    # the conv first layer is measured through its dense matrix, which computes the convolution
    layers = load_run(tmp_path / "lightning.pt", input_shape=(1, 6, 6)).layers
    x = torch.randn(2, 1, 6, 6)
    dense = x.flatten(1).double().numpy() @ layers["0.dense"].T
    conv = torch.nn.functional.conv2d(x, net[0].weight, padding=1).flatten(1).detach().double().numpy()
    assert np.allclose(dense, conv, atol=1e-5)
    assert list(rep.layers)[:2] == ["0.dense", "4"] and rep.layers["0.dense"]["movement"] > 0
    assert "0.dense" in rep.reference["init"] and any("stride 1" in n for n in rep.notes)
    assert any(n.startswith("left out") and "2 (4x4x3x3)" in n for n in rep.notes)
    # a two-number shape that could be read two ways is refused, naming both
    with pytest.raises(ConfigError, match=r"8,8 is ambiguous: 8 channels x 8 positions \(write 8,8,1\) or one channel "
                                          r"on an 8 x 8 grid \(write 1,8,8\)"):
        parse_input_shape("8,8")
    assert parse_input_shape("8,8,1") == (8, 8) and parse_input_shape("1,40") == (1, 40)


def test_a_whole_pickled_model_is_refused_with_what_to_do(tmp_path):
    import torch.nn as nn

    torch.save(nn.Sequential(nn.Linear(4, 2)), tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match=r"a whole pickled model \(Sequential\); .*torch.save\(model.state_dict"):
        load_checkpoint(tmp_path / "whole.pt")
