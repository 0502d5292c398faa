"""Code cites docs/design.md by section ("docs/design.md §4.3"): every cited section must exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITE = re.compile(r"docs/design\.md §(\d+(?:\.\d+)?)")


def sections() -> set[str]:
    """Section numbers of docs/design.md's headings: "## 4. The measure contract" -> 4, "### 4.3 ..." -> 4.3."""
    text = (ROOT / "docs" / "design.md").read_text()
    return {m.group(1) for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.MULTILINE)}


def test_every_cited_design_section_exists():
    have = sections()
    assert {"1", "2", "3", "4", "5", "6"} <= have
    files = [*ROOT.glob("probe/**/*.py"), *ROOT.glob("probe/**/*.toml"), *ROOT.glob("scripts/*.py"),
             *ROOT.glob("tests/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    missing = [f"{p.relative_to(ROOT)}: §{n}" for p in files for n in CITE.findall(p.read_text()) if n not in have]
    assert not missing, missing
