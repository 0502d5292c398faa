"""Models from elsewhere: for each layout, the dense first layer probe measures equals one built independently here
(the model's own first layer applied to basis inputs), or the input is refused in one line naming the option that
fixes it. Tiny models are built from transformers' configs (optional: skipped without it); timm's layouts (ResNet
stem conv1 7x7 stride 2, MLP-Mixer stem.proj) are written by hand from their key names and shapes, since timm needs
torchvision, which does not import beside this machine's torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import probe
from probe.analysis.load import read_source
from probe.analysis.outside import in_memory
from probe.config import ConfigError
from probe.run.checkpoint import CheckpointError


def basis_dense(f, n: int, shape) -> np.ndarray:
    """The matrix of the linear map f (bias removed) as columns f(e_j) - f(0), inputs reshaped to ``shape``."""
    with torch.no_grad():
        eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
        out = f(eye).reshape(n, -1) - f(torch.zeros(1, *shape, dtype=torch.float64)).reshape(1, -1)
    return out.T.numpy()


def first(source):
    layers = source.layout.layers(source.state_dict)
    return next(iter(layers.items()))


def test_mlp_in_safetensors_reads_as_the_linear_layer(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(2 * 5 * 5, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3)).double()
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, tmp_path / "mlp.safetensors")
    src = read_source(tmp_path / "mlp.safetensors", (2, 5, 5))
    name, W = first(src)
    assert name == "0" and np.allclose(W, basis_dense(mlp[0], 50, (50,)))
    assert list(src.layout.layers(src.state_dict)) == ["0", "2"]
    with pytest.raises(CheckpointError, match="--input-shape"):
        read_source(tmp_path / "mlp.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_source(tmp_path / "bad.safetensors", (2, 5, 5))


def test_conv_with_stride_and_padding_is_the_convolution_it_computes(tmp_path):
    """A ResNet stem as timm names it (conv1 7x7, stride 2, padding 3): the dense matrix is conv2d on basis images;
    read as stride 1 (the default, noted) it is a different matrix."""
    torch.manual_seed(1)
    sd = {"conv1.weight": torch.randn(4, 3, 7, 7, dtype=torch.float64), "bn1.weight": torch.ones(4),
          "bn1.bias": torch.zeros(4), "fc.weight": torch.randn(10, 4, dtype=torch.float64)}
    torch.save(sd, tmp_path / "resnet.pt")
    src = read_source(tmp_path / "resnet.pt", (3, 12, 12), stride=2, padding=3)
    name, W = first(src)
    want = basis_dense(lambda x: F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), 3 * 144, (3, 12, 12))
    assert name == "conv1.dense" and W.shape == (4 * 6 * 6, 3 * 144) and np.allclose(W, want)
    assert any("stride 2" in n and "--stride/--padding" in n for n in src.layout.notes)
    plain = read_source(tmp_path / "resnet.pt", (3, 12, 12))
    assert first(plain)[1].shape == (4 * 144, 3 * 144) and any("--stride" in n for n in plain.layout.notes)
    with pytest.raises(ConfigError, match="--stride must be at least 1"):
        read_source(tmp_path / "resnet.pt", (3, 12, 12), stride=0)


def test_mixer_stem_is_a_patch_embedding_measured_over_one_patch(tmp_path):
    """timm's MLP-Mixer stem (stem.proj, kernel = stride = 4): one (O, C*p*p) matrix over a 3x4x4 patch; its
    own conv on one patch gives the same matrix. Asked as stride 1, it is a convolution over the given grid."""
    torch.manual_seed(2)
    k = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    sd = {"stem.proj.weight": k, "stem.proj.bias": torch.zeros(8),
          "blocks.0.mlp_tokens.fc1.weight": torch.randn(6, 4, dtype=torch.float64)}
    torch.save(sd, tmp_path / "mixer.pt")
    src = read_source(tmp_path / "mixer.pt")  # no --input-shape needed: a patch is its own grid
    name, W = first(src)
    assert name == "stem.proj.patch" and (src.geometry.channels, *src.geometry.spatial) == (3, 4, 4)
    assert np.allclose(W, basis_dense(lambda x: F.conv2d(x, k, stride=4), 48, (3, 4, 4)))
    conv = read_source(tmp_path / "mixer.pt", (3, 8, 8), stride=1, padding=0)
    assert first(conv)[0] == "stem.proj.dense" and first(conv)[1].shape == (8 * 25, 3 * 64)


def test_in_memory_model_reads_stride_and_padding_from_the_module_and_matches_the_cli_report(tmp_path):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 16, 5))
    sd, hints, _ = in_memory(model)
    assert hints.conv["0.weight"] == (2, 1)
    rep = probe.analyze(model, input_shape=(2, 8, 8))
    W = basis_dense(lambda x: model[0](x.float()).double(), 128, (2, 8, 8))
    assert rep.shapes["0.dense"] == W.shape
    torch.save(model.state_dict(), tmp_path / "m.pt")
    cli = probe.analyze_checkpoint(tmp_path / "m.pt", input_shape=(2, 8, 8), stride=2, padding=1)
    assert list(rep.layers) == list(cli.layers) == ["0.dense", "3"]
    for layer in rep.layers:
        assert rep.layers[layer] == pytest.approx(cli.layers[layer], nan_ok=True)
        assert rep.reference["gaussian"][layer] == pytest.approx(cli.reference["gaussian"][layer], nan_ok=True)
    # analyze_checkpoint given an object hands it to analyze (it used to raise a raw TypeError)
    assert probe.analyze_checkpoint(model.state_dict(), input_shape=(2, 8, 8), stride=2, padding=1).shapes == cli.shapes
    with pytest.raises(ConfigError, match="takes a path, an nn.Module or a state_dict"):
        probe.analyze(3)


def test_in_memory_init_gives_movement():
    torch.manual_seed(4)
    m0 = torch.nn.Sequential(torch.nn.Linear(16, 6), torch.nn.Linear(6, 2))
    m1 = torch.nn.Sequential(torch.nn.Linear(16, 6), torch.nn.Linear(6, 2))
    m1.load_state_dict(m0.state_dict())
    with torch.no_grad():
        m1[0].weight.add_(0.1)
    rep = probe.analyze(m1, input_shape=(1, 4, 4), init=m0)
    assert rep.layers["0"]["movement"] > 0 and rep.layers["1"]["movement"] == 0
    assert "0" in rep.reference["init"]


def test_first_layer_option_names_the_valid_keys(tmp_path):
    torch.save({"a.weight": torch.randn(3, 4), "b.weight": torch.randn(2, 3)}, tmp_path / "sd.pt")
    with pytest.raises(ConfigError, match="--first-layer c: no such tensor.*a, b"):
        read_source(tmp_path / "sd.pt", (1, 2, 2), first_layer="c")
    src = read_source(tmp_path / "sd.pt", (1, 1, 3), first_layer="b")
    assert first(src)[0] == "b"
    with pytest.raises(ConfigError, match="--stride/--padding: the first layer a .* is a matrix"):
        read_source(tmp_path / "sd.pt", (1, 2, 2), stride=2)


def test_gpt2_token_table_refused_and_conv1d_read_transposed(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(5)
    cfg = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=8, bos_token_id=0,
                                  eos_token_id=0)
    model = transformers.GPT2Model(cfg).double()
    torch.save(model.state_dict(), tmp_path / "gpt2.pt")
    with pytest.raises(CheckpointError, match="wte .* token embedding table.*--first-layer"):
        read_source(tmp_path / "gpt2.pt", (1, 4, 4))
    src = read_source(tmp_path / "gpt2.pt", (16, 1), first_layer="h.0.attn.c_attn")
    name, W = first(src)
    attn = model.h[0].attn.c_attn
    assert name == "h.0.attn.c_attn" and np.allclose(W, basis_dense(attn, 16, (16,)))
    fc = src.layout.layers(src.state_dict)["h.0.mlp.c_fc"]
    assert np.allclose(fc, basis_dense(model.h[0].mlp.c_fc, 16, (16,)))
    # in memory, the Conv1D modules and the Embedding are known by their classes
    rep = probe.analyze(model, input_shape=(16, 1), first_layer="h.0.attn.c_attn")
    assert rep.shapes["h.0.attn.c_attn"] == (48, 16) and rep.shapes["h.0.mlp.c_fc"] == (64, 16)
    with pytest.raises(CheckpointError, match="token embedding table"):
        probe.analyze(model, input_shape=(1, 4, 4))
    table = read_source(tmp_path / "gpt2.pt", (50, 1), first_layer="wte")  # chosen: the layer on one-hot tokens
    assert np.allclose(first(table)[1], basis_dense(lambda x: x @ model.wte.weight, 50, (50,)))


def test_vit_save_pretrained_folder_reads_its_patch_embedding_and_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32)
    model = transformers.ViTModel(cfg).double()
    model.save_pretrained(tmp_path / "vit")
    src = read_source(tmp_path / "vit")
    name, W = first(src)
    proj = model.embeddings.patch_embeddings.projection
    assert name.endswith("projection.patch") and (src.geometry.channels, *src.geometry.spatial) == (3, 4, 4)
    assert np.allclose(W, basis_dense(proj, 48, (3, 4, 4)))
    assert any("config.json" in n for n in src.layout.notes)
    rep = probe.analyze(tmp_path / "vit", data=False)
    assert not any("projection (" in n for n in rep.notes if n.startswith("left out"))


def test_resnet_config_json_gives_the_stem_stride(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(7)
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=4, hidden_sizes=[4], depths=[1],
                                    layer_type="basic")
    model = transformers.ResNetModel(cfg).double()
    model.save_pretrained(tmp_path / "resnet")
    src = read_source(tmp_path / "resnet", (3, 8, 8))
    name, W = first(src)
    conv = model.embedder.embedder.convolution
    assert conv.stride == (2, 2) and name.endswith(".dense")
    assert np.allclose(W, basis_dense(conv, 192, (3, 8, 8)))
    with pytest.raises(CheckpointError, match="--input-shape"):
        read_source(tmp_path / "resnet")


def test_sharded_and_bin_pretrained_folders_and_wrapped_dicts(tmp_path):
    """A sharded save_pretrained folder (an index naming two safetensors shards), one with pytorch_model.bin, and
    a Lightning-style wrapped torch file read to the same layers; a folder with a config.json and no weights is
    not taken for one."""
    save_file = pytest.importorskip("safetensors.torch").save_file
    import json

    torch.manual_seed(8)
    sd = {"fc1.weight": torch.randn(6, 16), "fc1.bias": torch.zeros(6), "fc2.weight": torch.randn(3, 6)}
    (tmp_path / "sharded").mkdir()
    save_file({"fc1.weight": sd["fc1.weight"], "fc1.bias": sd["fc1.bias"]}, tmp_path / "sharded" / "a.safetensors")
    save_file({"fc2.weight": sd["fc2.weight"]}, tmp_path / "sharded" / "b.safetensors")
    index = {"weight_map": {"fc1.weight": "a.safetensors", "fc1.bias": "a.safetensors", "fc2.weight": "b.safetensors"}}
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "bin").mkdir()
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "lightning.ckpt")
    want = {"fc1": sd["fc1.weight"].double().numpy(), "fc2": sd["fc2.weight"].double().numpy()}
    for path in (tmp_path / "sharded", tmp_path / "bin", tmp_path / "lightning.ckpt"):
        src = read_source(path, (1, 4, 4))
        layers = src.layout.layers(src.state_dict)
        assert list(layers) == list(want) and all(np.array_equal(layers[k], want[k]) for k in want), path
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no checkpoints .*save_pretrained"):
        probe.analyze(tmp_path / "empty")


def test_a_probe_model_in_memory_is_measured_through_its_own_first_layer_dense():
    """An LCN's weight (O, P, C, k) is no convolution kernel: a probe model object brings first_layer_dense()."""
    from probe.models import build_model
    from probe.tasks import Task
    from probe.geometry import Geometry as G

    geo = G(1, (12,))
    x = torch.zeros(0, 12)
    task = Task("shell", x, torch.zeros(0, dtype=torch.long), x, torch.zeros(0, dtype=torch.long), geo, 3, "ce", None)
    torch.manual_seed(9)
    model = build_model("lcn", task, 8, 1, "standard", {"channels": 2, "kernel": 3})
    rep = probe.analyze(model, data=False)
    dense = model.first_layer_dense().detach().double().numpy()
    (first, shape), = list(rep.shapes.items())[:1]
    assert first.endswith(".dense") and shape == dense.shape and rep.geometry == geo
    assert any("first_layer_dense" in n for n in rep.notes)
