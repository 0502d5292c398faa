"""README's "Analyze a model from elsewhere": its commands, parsed from the README, run on tiny files of the layouts
they name, written here (the save_pretrained folder and the timm and GPT-2 state_dicts by hand, from their key names
and shapes: no transformers or timm needed), and its Python example run as it stands."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from probe.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("## Analyze a model from elsewhere")
    return text[start: text.index("\n## ", start + 1)]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(), re.S)


def write_files(root: Path) -> None:
    save_file = pytest.importorskip("safetensors.torch").save_file

    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    save_file({"0.weight": r(8, 3 * 32 * 32), "0.bias": r(8), "2.weight": r(2, 8), "2.bias": r(2)},
              root / "mlp.safetensors")
    (root / "vit").mkdir()
    (root / "vit" / "config.json").write_text(json.dumps({"model_type": "vit", "image_size": 32, "patch_size": 16,
                                                          "num_channels": 3, "hidden_size": 16}))
    save_file({"embeddings.cls_token": r(1, 1, 16), "embeddings.position_embeddings": r(1, 5, 16),
               "embeddings.patch_embeddings.projection.weight": r(16, 3, 16, 16),
               "embeddings.patch_embeddings.projection.bias": r(16),
               "encoder.layer.0.attention.attention.query.weight": r(16, 16),
               "encoder.layer.0.output.dense.weight": r(16, 32)}, root / "vit" / "model.safetensors")
    torch.save({"conv1.weight": r(2, 3, 7, 7), "bn1.weight": r(2), "bn1.bias": r(2), "fc.weight": r(10, 2)},
               root / "resnet.pt")
    torch.save({"stem.proj.weight": r(8, 3, 16, 16), "stem.proj.bias": r(8),
                "blocks.0.mlp_tokens.fc1.weight": r(8, 4), "head.weight": r(10, 8)}, root / "mixer.pt")
    torch.save({"wte.weight": r(10, 768), "wpe.weight": r(4, 768), "h.0.ln_1.weight": r(768),
                "h.0.attn.c_attn.weight": r(768, 96), "h.0.attn.c_proj.weight": r(32, 768)}, root / "gpt2.pt")
    torch.save({"prompt.weight": r(5, 16), "encoder.fc1.weight": r(32, 784), "head.weight": r(10, 32)},
               root / "model.pt")


@pytest.mark.slow
def test_readme_commands_run_on_the_layouts_they_name(tmp_path, monkeypatch):
    commands = [line for block in blocks("sh") for line in block.splitlines() if line.startswith("probe ")]
    assert len(commands) >= 6
    write_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for line in commands:
        argv = shlex.split(line)[1:]
        res = runner.invoke(app, [*argv, "--no-data"])
        assert res.exit_code == 0, f"{line}\n{res.output}"
        assert "note:" in res.output  # every outside reading is stated
        if "--first-layer" in argv:  # without it, refused on one line that names it
            i = argv.index("--first-layer")
            bare = runner.invoke(app, argv[:i] + argv[i + 2:])
            lines = [s for s in bare.output.splitlines() if s.strip()]
            assert bare.exit_code != 0 and len(lines) == 1 and "--first-layer" in lines[0], bare.output


def test_readme_python_example_runs(capsys):
    (code,) = blocks("python")
    exec(compile(code, "README", "exec"), {})
    assert "gaussian" in capsys.readouterr().out
