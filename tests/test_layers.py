"""The layers of docs/design.md §2.3 hold: every probe import, lazy ones included, goes down the table.

The table in docs/design.md §2.3 is the single source: it is parsed here, not copied. Each row of its code block
names one or more *units* (a top-level module such as ``config``, a package such as ``metrics`` with all its
modules, or ``probe`` for the package's own ``__init__``: its public names) and, after two or more spaces, what
they may import: ``no probe imports``, ``everything above``, or a comma list of units from rows above
(parentheses and anything after ``;`` are comments). A unit imports itself freely; anything else is an import
that goes up a layer or sideways, unless its row names it.

What counts as an import, read with ``ast`` from every ``probe/**/*.py``:

- ``import probe.x`` and ``from probe.x import y`` (``y`` a submodule or a name), relative ones (``from . import
  y``, ``from ..x import y``), at module level and inside functions alike;
- a string literal that spells a probe module path (``"probe.metrics.second_order"``, or
  ``"probe.metrics.second_order:hook"``): the paths handed to ``importlib.import_module`` or ``python -m``
  (a logger's name, ``logging.getLogger("probe.run")``, is not an import);
- an ``import_module``/``__import__`` call whose path is built at run time (an f-string or ``+``) is refused:
  its target cannot be checked.

Also checked: no import cycle among probe modules (lazy imports and string paths included), and every probe import
inside a function says why it is lazy in a ``# lazy: ...`` comment on its line or directly above it: an import
stays inside a function only to spare a caller a real import-time cost (torch for ``probe --help``) or a heavy
optional dependency.

On the code before the layering was made true, against the table as it then stood, this test found:
metrics/pull.py importing run.loop.loss_fn, models.blocks and models.conv; metrics/second_order.py importing
run.tracking.is_track_step and tasks.clone; metrics/kernels.py importing models.conv; metrics/routing.py importing
tasks.sequences (an exception the table allowed in a comment); imports no row named (analysis, figures, sweep and
run importing config or geometry, figures importing metrics and tasks, sweep importing analysis and cli importing
demo, each beside it in the table); seeding, progress and the package's own ``__init__`` in no row; 15 import
cycles: run.procedures <-> run.tracking, metrics.pull -> run.loop -> run.tracking -> metrics.pull,
metrics.second_order -> run.tracking -> metrics (and back through the string path
``"probe.metrics.second_order:clone_accuracy_hook"``), and every model and task module with its package's
``__init__`` (the registries); and 90 probe import statements inside functions, none saying why.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH_RE = re.compile(r"probe(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?")
IMPORT_CALLS = ("import_module", "__import__")
LAZY_MARK = "# lazy:"


# -- the table ------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    rows: list[tuple[list[str], set[str]]]  # per row: its units, the units they may import

    def row_of(self, unit: str) -> int:
        return next(i for i, (units, _) in enumerate(self.rows) if unit in units)

    def allowed(self, unit: str) -> set[str]:
        return self.rows[self.row_of(unit)][1]

    @property
    def units(self) -> list[str]:
        return [u for units, _ in self.rows for u in units]


def layer_table(text: str) -> Table:
    """The table of the first code block after the heading "### 2.3" of ``text`` (docs/design.md). ValueError
    naming the row when a row does not parse or names a unit that is not above it."""
    m = re.search(r"^### 2\.3 .*?^```\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    if not m:
        raise ValueError("docs/design.md: no code block under ### 2.3")
    rows: list[tuple[list[str], set[str]]] = []
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"docs/design.md §2.3: row {line.strip()!r} has no second column")
        units = [u.strip() for u in parts[0].split(",")]
        spec = re.sub(r"\([^)]*\)", "", parts[1]).split(";")[0].strip()
        above = [u for r, _ in rows for u in r]
        if spec == "no probe imports":
            allowed: set[str] = set()
        elif spec == "everything above":
            allowed = set(above)
        else:
            allowed = {u.strip() for u in spec.split(",") if u.strip()}
            wrong = sorted(allowed - set(above))
            if wrong:
                raise ValueError(f"docs/design.md §2.3: row {', '.join(units)} names {', '.join(wrong)}, "
                                 "which is not in a row above it")
        rows.append((units, allowed))
    return Table(rows)


# -- the imports ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Edge:
    src: str  # module names: probe.metrics.pull
    dst: str
    where: str  # probe/metrics/pull.py:220
    lazy: bool  # inside a function


def module_names(pkg: Path) -> dict[str, Path]:
    """``probe.x.y`` -> its file, for every .py file under ``pkg`` (a package's ``__init__`` is the package)."""
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _resolve(name: str, modules) -> str | None:
    """The longest prefix of dotted ``name`` that is a probe module below the root package, else None."""
    parts = name.split(".")
    for k in range(len(parts), 1, -1):
        if ".".join(parts[:k]) in modules:
            return ".".join(parts[:k])
    return None


#: calls whose string arguments name something other than a module to import: a logger, an entry point group
NAMING_CALLS = ("getLogger", "load_plugins", "entry_points")


def _is_logger_call(node) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr in NAMING_CALLS
            or isinstance(f, ast.Name) and f.id in NAMING_CALLS)


def _import_call(node) -> bool:
    f = getattr(node, "func", None)
    return isinstance(node, ast.Call) and (isinstance(f, ast.Attribute) and f.attr in IMPORT_CALLS
                                           or isinstance(f, ast.Name) and f.id in IMPORT_CALLS)


def imports_of(mod: str, path: Path, modules, root: Path) -> tuple[list[Edge], list[str]]:
    """The probe imports of module ``mod`` (file ``path``) and the problems found on the way: an import path built
    at run time, a lazy import without its ``# lazy:`` reason."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    rel = path.relative_to(root).as_posix()
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    top = mod.split(".")[0]
    edges, problems = [], []
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    skip = {arg for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_logger_call(n)
            for arg in [*n.args, *(k.value for k in n.keywords)]}

    def lazy(node) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return True
        return False

    def says_why(node) -> bool:
        if any(LAZY_MARK in lines[i] for i in range(node.lineno - 1, node.end_lineno)):
            return True
        i = node.lineno - 2  # the comment and import lines right above it
        while i >= 0 and lines[i].strip().startswith(("#", "from ", "import ")):
            if LAZY_MARK in lines[i]:
                return True
            i -= 1
        return False

    def add(dst, node):
        edge = Edge(mod, dst, f"{rel}:{node.lineno}", lazy(node))
        if edge in edges:  # one line per statement and module
            return
        edges.append(edge)
        if edge.lazy and isinstance(node, (ast.Import, ast.ImportFrom)) and not says_why(node):
            problems.append(f"{edge.where}: imports {dst} inside a function without a '{LAZY_MARK}' reason "
                            "(move it to the top of the module)")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                dst = _resolve(a.name, modules) if a.name.split(".")[0] == top else None
                if dst or a.name == top:
                    add(dst or top, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != top:
                continue
            base = _resolve(name, modules) or top
            for a in node.names:
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in skip:
            if PATH_RE.fullmatch(node.value) and node.value.startswith(top + "."):
                dst = _resolve(node.value.split(":")[0], modules)
                if dst and dst != mod:
                    add(dst, node)
        elif _import_call(node) and node.args and isinstance(node.args[0], (ast.JoinedStr, ast.BinOp)):
            problems.append(f"{rel}:{node.lineno}: an import path built at run time; spell it out as a string so "
                            "that its layer can be checked")
    return edges, problems


# -- the check ------------------------------------------------------------------------------------------------------
def unit_of(mod: str, units) -> str | None:
    """The table's unit of module ``mod``: the longest unit that is ``mod`` or a package above it."""
    if mod.count(".") == 0:
        return mod if mod in units else None
    rest = mod.split(".")[1:]
    for k in range(len(rest), 0, -1):
        if ".".join(rest[:k]) in units:
            return ".".join(rest[:k])
    return None


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One shortest cycle per strongly connected group of modules (self-imports aside)."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        if e.src != e.dst:
            graph.setdefault(e.src, {}).setdefault(e.dst, e)
    found, seen = [], set()
    for start in sorted(graph):
        if start in seen:
            continue
        prev: dict[str, Edge] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt, e in graph.get(node, {}).items():
                if nxt == start:
                    path, cur = [e], node
                    while cur != start:
                        path.append(prev[cur])
                        cur = prev[cur].src
                    path.reverse()
                    found.append(path)
                    seen.update(p.src for p in path)
                    queue.clear()
                    break
                if nxt not in prev:
                    prev[nxt] = e
                    queue.append(nxt)
    return found


def violations(root: Path, design: str, package: str = "probe") -> list[str]:
    """Every import under ``root/package`` that the layer table of ``design`` (docs/design.md's text) does not
    allow, every cycle and every unexplained lazy import, one line each, naming file:line."""
    table = layer_table(design)
    modules = module_names(root / package)
    out: list[str] = []
    for unit in table.units:
        if not any(unit_of(m, table.units) == unit for m in modules):
            out.append(f"docs/design.md §2.3: {unit} names no module under {package}/")
    edges: list[Edge] = []
    for mod, path in modules.items():
        es, problems = imports_of(mod, path, modules, root)
        edges += es
        out += problems
        if unit_of(mod, table.units) is None:
            out.append(f"{path.relative_to(root).as_posix()}: {mod} is in no row of the layer table "
                       "(docs/design.md §2.3)")
    for e in edges:
        a, b = unit_of(e.src, table.units), unit_of(e.dst, table.units)
        if a is None or b is None or a == b or b in table.allowed(a):
            continue
        ra, rb = table.row_of(a), table.row_of(b)
        how = "up a layer" if rb > ra else "sideways" if rb == ra else "to a layer its row does not name"
        out.append(f"{e.where}: {e.src} imports {e.dst}{' (lazily)' if e.lazy else ''}: {a} -> {b} goes {how} "
                   "(docs/design.md §2.3)")
    for cyc in cycles(edges):
        out.append("import cycle: " + " -> ".join(f"{e.src} ({e.where})" for e in cyc) + f" -> {cyc[0].src}")
    return out


def test_probe_imports_follow_the_layer_table_of_the_design():
    found = violations(ROOT, (ROOT / "docs" / "design.md").read_text())
    assert not found, "\n".join(found)


def test_every_probe_module_is_in_the_table():
    table = layer_table((ROOT / "docs" / "design.md").read_text())
    mods = module_names(ROOT / "probe")
    assert {"probe", "probe.metrics.pull", "probe.run.tracking", "probe.cli"} <= set(mods)
    assert all(unit_of(m, table.units) for m in mods), [m for m in mods if not unit_of(m, table.units)]
    # the order the design states: measures below training, training below analysis, the CLI last
    order = [table.row_of(u) for u in ("geometry", "metrics", "run", "analysis", "figures", "cli")]
    assert order == sorted(order) and len(set(order)) == len(order)


# -- the checker finds what it is for: a small package with every kind of violation --------------------------------
TABLE = """\
### 2.3 Layers

```
 base                 no probe imports
 low                  base (one helper)
 high                 low, base
 top                  everything above; nothing imports it
```
"""


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, body in {"probe/__init__.py": "", "probe/base.py": "", **files}.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    return tmp_path


def test_a_clean_package_passes(tmp_path):
    root = _package(tmp_path, {
        "probe/low/__init__.py": "from probe.low.a import f\n",
        "probe/low/a.py": "import probe.base\n\ndef f():\n    return 1\n",
        "probe/high/__init__.py": "",
        "probe/high/b.py": ("from ..low import a\nfrom probe import base\n\n\ndef g():\n"
                            "    # lazy: spares the caller the import of low (heavy)\n    from probe.low import f\n"),
        "probe/top.py": 'import importlib\n\nM = "probe.high.b:g"\n\ndef h(name):\n'
                        "    return importlib.import_module(name)\n",
    })
    table = TABLE.replace(" base                 no probe imports\n",
                          " base                 no probe imports\n probe                no probe imports\n")
    assert violations(root, table) == []


def test_the_checker_names_file_and_line_of_each_violation(tmp_path):
    root = _package(tmp_path, {
        "probe/low/__init__.py": "",
        "probe/low/a.py": "import logging\n\nlog = logging.getLogger('probe.high')\n\n\ndef f():\n"
                          "    from probe.high.e import g  # lazy: a reason does not make it legal\n",
        "probe/low/c.py": "import importlib\n\n\ndef f(n):\n    return importlib.import_module(f'probe.low.{n}')\n",
        "probe/high/__init__.py": "",
        "probe/high/b.py": "from probe.high import d\n\n\ndef g():\n    from probe.low import a\n",
        "probe/high/d.py": 'HOOK = "probe.high.b:g"\n',
        "probe/high/e.py": "",
        "probe/top.py": "from . import high\n",
    })
    table = TABLE.replace(" base                 no probe imports\n",
                          " base                 no probe imports\n probe                no probe imports\n")
    found = violations(root, table)
    text = "\n".join(found)
    assert "probe/low/a.py:7: probe.low.a imports probe.high.e (lazily): low -> high goes up a layer" in text
    assert "probe/low/a.py:3" not in text  # a logger's name is not an import
    assert "probe/low/c.py:5: an import path built at run time" in text
    assert "probe/high/b.py:5: imports probe.low.a inside a function without a '# lazy:' reason" in text
    assert "probe/top.py" not in text  # everything above, and "from . import" resolved
    cyc = [f for f in found if f.startswith("import cycle")]
    assert len(cyc) == 1 and "probe.high.b (probe/high/b.py:1)" in cyc[0] and "probe/high/d.py:1" in cyc[0]
    assert len(found) == 4, found


def test_the_checker_refuses_a_module_or_row_outside_the_table(tmp_path):
    root = _package(tmp_path, {"probe/low.py": "", "probe/high.py": "", "probe/top.py": "", "probe/extra.py": ""})
    found = violations(root, TABLE)
    assert "probe/extra.py: probe.extra is in no row of the layer table (docs/design.md §2.3)" in found
    assert "probe/__init__.py: probe is in no row of the layer table (docs/design.md §2.3)" in found
    bad = TABLE.replace("low, base", "top, base")
    try:
        layer_table(bad)
    except ValueError as e:
        assert "row high names top, which is not in a row above it" in str(e)
    else:
        raise AssertionError("a row naming a unit below it was accepted")
    found = violations(root, TABLE.replace(" top  ", " topx "))
    assert any("topx names no module" in f for f in found)
