import json

import pytest
import torch
import torch.nn.functional as F

from probe.config import ConfigError, RunConfig
from probe.models import build_model
from probe.tasks import make_task
from probe.run.loop import run_training

TASKS = {"mqar": {"n_train": 32, "n_test": 16}, "induction": {"n_train": 32, "n_test": 16, "length": 12, "prefix": 4},
         "icl-regression": {"n_train": 32, "n_test": 16, "dim": 3, "context": 5},
         "parity": {"n_train": 32, "n_test": 16}}
MODELS = {"mlp": {}, "transformer": {"heads": 2}, "mixer": {}}




def onehot(task, x):
    return F.one_hot(x, task.vocab).float() if task.vocab else x.reshape(len(x), *task.geometry.input_shape)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("task_name", list(TASKS))
def test_sequence_models_output_shapes_and_accept_one_hot_inputs(model, task_name):
    task = make_task(task_name, TASKS[task_name], seed=0)
    torch.manual_seed(0)
    net = build_model(model, task, 16, 2, "standard", MODELS[model]).eval()
    x = task.x_test[:5]
    out = net(x)
    T = task.geometry.spatial[0]
    assert out.shape == ((5, T, task.n_outputs) if task.y_train.dim() == 2 and task.loss == "ce"
                         else (5, task.n_outputs))
    torch.testing.assert_close(net(onehot(task, x)), out, atol=1e-5, rtol=1e-5)
    W = net.first_layer_dense()
    assert W.shape[1] == task.geometry.n_inputs


@pytest.mark.parametrize("opts", [{}, {"embed_dim": 3}, {"embed_dim": 3, "share_embed": True}])
def test_mlp_dense_first_layer_is_the_linear_map_its_first_units_see(opts):
    task = make_task("mqar", TASKS["mqar"], seed=0)
    net = build_model("mlp", task, 8, 2, "standard", opts)
    x = task.x_test[:4]
    first = net.mlp.layers[0]
    flat = F.one_hot(x, task.vocab).float().flatten(1)
    torch.testing.assert_close(first(net.features(x)), flat @ net.first_layer_dense().T + first.bias,
                               atol=1e-5, rtol=1e-5)


def test_learned_mlp_embeddings_are_per_position_unless_shared():
    task = make_task("mqar", TASKS["mqar"], seed=0)
    own = build_model("mlp", task, 8, 1, "standard", {"embed_dim": 3})
    shared = build_model("mlp", task, 8, 1, "standard", {"embed_dim": 3, "share_embed": True})
    assert own.tables.shape == (16, 64, 3) and shared.tables.shape == (1, 64, 3)


@pytest.mark.parametrize("model", ["transformer", "mixer"])
def test_token_table_dense_layer_matches_the_embedding(model):
    task = make_task("mqar", TASKS["mqar"], seed=0)
    net = build_model(model, task, 8, 1, "standard", {})
    x = task.x_test[:3]
    dense = F.one_hot(x, task.vocab).float().flatten(1) @ net.first_layer_dense().T
    torch.testing.assert_close(dense, net.embed[x].flatten(1), atol=1e-6, rtol=1e-6)


def test_causal_transformer_does_not_see_the_future_and_bidirectional_does():
    task = make_task("mqar", TASKS["mqar"], seed=0)
    x = task.x_test[:2].clone()
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % task.vocab
    for causal in (True, False):
        torch.manual_seed(0)
        net = build_model("transformer", task, 16, 2, "standard", {"causal": causal}).eval()
        same = torch.allclose(net(x)[:, :-1], net(x2)[:, :-1], atol=1e-6)
        assert same == causal


def test_attention_maps_are_one_row_stochastic_map_per_layer():
    task = make_task("mqar", TASKS["mqar"], seed=0)
    net = build_model("transformer", task, 16, 3, "standard", {"heads": 4})
    maps = net.attention_maps(task.x_test[:5])
    assert len(maps) == 3 and maps[0].shape == (5, 4, 16, 16)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(5, 4, 16))
    assert float(maps[0].triu(1).abs().max()) == 0.0  # causal by default


def test_image_only_options_and_models_are_refused_on_sequence_tasks():
    task = make_task("mqar", TASKS["mqar"], seed=0)
    with pytest.raises(ConfigError, match="arch=plain"):
        build_model("mlp", task, 8, 1, "standard", {"arch": "bottleneck"})
    with pytest.raises(ConfigError, match="divisible"):
        build_model("transformer", task, 10, 1, "standard", {"heads": 3})
    with pytest.raises(ConfigError, match="does not take sequence"):
        build_model("cnn", task, 8, 1, "standard", {})


@pytest.mark.slow
@pytest.mark.parametrize("model,opts", [("mlp", {}), ("transformer", {"heads": 2}), ("mixer", {})])
def test_short_training_through_the_trainer_lowers_the_loss(tmp_path, model, opts):
    cfg = RunConfig(task="reverse", task_opts={"vocab": 8, "length": 4, "n_train": 128, "n_test": 128},
                    model=model, model_opts=opts,
                    width=32, depth=1, steps=60, batch_size=64, lr=3e-3, optimizer="adamw", eval_every=60,
                    log_every=60, checkpoints=2, track="none", device="cpu")
    run_training(cfg, tmp_path / model, progress=False)
    rows = [json.loads(line) for line in (tmp_path / model / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_loss"] < 0.8 * rows[0]["test_loss"]
