"""The public API of `import probe`, and the README's "From Python" example, run as written (fewer steps)."""

import re
from pathlib import Path

import pytest

import probe

ROOT = Path(__file__).parents[1]


def test_every_public_name_resolves():
    for name in probe.__all__:
        assert getattr(probe, name) is not None, name
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
