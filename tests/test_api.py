"""The public API of `import probe`, and the README's "From Python" example, run as written (fewer steps)."""

import re
from pathlib import Path

import pytest

import probe

ROOT = Path(__file__).parents[1]


def test_every_public_name_resolves():
    # each name is the object of the module it is documented in (not a stand-in), and callable or a class
    from importlib import import_module

    from probe import _PUBLIC

    assert sorted(probe.__all__) == sorted([*_PUBLIC, "Geometry"])
    for name in probe.__all__:
        module = _PUBLIC.get(name, "probe.geometry")
        assert getattr(probe, name) is getattr(import_module(module), name), name
        assert callable(getattr(probe, name)) or isinstance(getattr(probe, name), dict), name
    assert probe.MEASURES["ipr"].name == "ipr"
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        probe.nosuch  # noqa: B018


@pytest.mark.slow
def test_readme_from_python_example_runs(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "steps=2000" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("steps=2000", "steps=20"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "window_mass_3" in out and "ipr" in out
    assert sorted(p.name for p in (tmp_path / "runs" / "api").iterdir()) == ["s0", "s1"]
