"""Models and tasks from other packages: an installed distribution that declares entry points in the groups
``probe.models`` or ``probe.tasks`` has them imported at registry lookup, so its ``@probe.models.register`` and
``@probe.tasks.register`` builders are seen by the `probe` command, by `--jobs N` worker processes and by submitit
jobs (each of which looks the name up in its own process), not only in the process that imported them.

A package declares, in its pyproject.toml::

    [project.entry-points."probe.models"]
    my_models = "my_package.models"      # a module whose import registers its builders

The entry point names a module (or an object in one); importing it is what registers. A plugin that fails to import
is a ConfigError naming it and its distribution, not a traceback.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from probe.config import ConfigError

_loaded: dict[str, set] = {}  # group -> (name, value) of the entry points imported in this process


def load_plugins(group: str) -> list[str]:
    """Import the entry points of ``group`` not imported yet in this process (the installed set is read again on
    every call, so a plugin installed while a notebook runs is seen); returns their names."""
    new = []
    for ep in entry_points(group=group):
        key = (ep.name, ep.value)
        if key in _loaded.setdefault(group, set()):
            continue
        _loaded[group].add(key)
        try:
            ep.load()
        except Exception as e:  # a user's package: whatever fails, one line naming it
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError(f"plugin {ep.name} = {ep.value} (entry point group {group}, distribution {dist}) "
                              f"failed to import: {type(e).__name__}: {msg}") from None
        new.append(ep.name)
    return new
