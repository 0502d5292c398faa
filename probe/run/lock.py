"""One writer per run folder: ``RUN/.lock`` (:class:`RunLock`), who holds it (:func:`lock_holder`), and taking over a
lock whose process is gone."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from probe.config import ConfigError
from probe.run.checkpoint import TEMP_MARK

LOCK_FILE = ".lock"
log = logging.getLogger("probe.run")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: /proc/PID/stat field 22), to tell a reused PID; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict) -> bool:
    """Whether the process a lock names is still running: on this host its PID exists and started when the lock
    says; on another host we cannot tell, so it counts as running."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    start = info.get("start")
    return start is None or _start_time(pid) in (None, start)


class RunLock:
    """The run folder's one-writer lock: ``RUN/.lock``, created atomically (O_CREAT | O_EXCL) holding the writer's
    PID, host, process start time and command line; removed by :meth:`release`. A lock whose process is gone (same
    host, PID not running or reused) is stale and is taken over, with a note on stderr; any other lock refuses
    the second writer with a ConfigError naming the holder."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self.held = False
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
                     "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}

    def acquire(self) -> "RunLock":
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.path.is_dir() or (self.path.exists() and not self.path.is_file()):
                    raise ConfigError(f"--out {self.out}: {self.path} is "
                                      f"{'a folder' if self.path.is_dir() else 'not a file'}"
                                      ", not a lock probe wrote; remove it if no probe process writes this run "
                                      "folder") from None
                raw, info = read_lock(self.out)
                if info is None and raw is not None and time.time() - _mtime(self.path) < 10:
                    raise ConfigError(f"--out {self.out}: another process is taking the run folder's lock "
                                      f"({self.path}) right now; a run folder has one writer at a time") from None
                if info is not None and _alive(info):
                    raise ConfigError(f"--out {self.out}: another probe process is writing this run folder (PID "
                                      f"{info.get('pid')} on {info.get('host')}, since {info.get('since')}); a run "
                                      f"folder has one writer at a time: wait for it, or stop it (if no such "
                                      f"process runs, delete {self.path})") from None
                if raw is not None and self._take_over(raw):
                    who = f"PID {info.get('pid')}" if info else "an unreadable lock"
                    log.warning(f"note: {self.path}: took over a stale lock ({who}, no longer running)")
                continue
            except OSError as e:
                raise ConfigError(f"--out {self.out}: cannot write there ({e.strerror or e})") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.info))
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise ConfigError(f"--out {self.out}: could not take the run folder's lock {self.path}")

    def _take_over(self, raw: str) -> bool:
        """Remove a stale lock whose content is ``raw``. The lock is renamed aside (atomic) and checked: if another
        process replaced it meanwhile, that lock is put back (link fails where a newer one exists)."""
        aside = self.out / f"{LOCK_FILE}{TEMP_MARK}{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # someone else removed it: try again
        except OSError as e:  # an immutable file, a read-only folder
            raise ConfigError(f"--out {self.out}: cannot take over the stale lock {self.path} ({e.strerror or e}); "
                              "remove it by hand if no probe process writes this run folder") from None
        try:
            try:
                ours = _read_text(aside) == raw
            except OSError:
                ours = False
            if not ours:
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
            return ours
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        raw, info = read_lock(self.out)
        if info is not None and info.get("pid") == self.info["pid"] and info.get("start") == self.info["start"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_text(path: Path) -> str:
    """A lock file's text; bytes that are not UTF-8 kept as surrogates, so any content compares exactly."""
    return path.read_bytes().decode("utf-8", "surrogateescape")


def read_lock(run_dir) -> tuple[str | None, dict | None]:
    """(raw text, parsed dict) of a run folder's lock; (None, None) when there is none, (raw, None) when it is
    not a lock probe wrote (or still being written)."""
    try:
        raw = _read_text(Path(run_dir) / LOCK_FILE)
    except FileNotFoundError:
        return None, None
    except OSError:
        return "", None
    try:
        info = json.loads(raw)
    except ValueError:
        return raw, None
    return raw, info if isinstance(info, dict) else None


def lock_holder(run_dir) -> str | None:
    """Who holds a run folder's lock, in words (``PID 123 on host, since ...``), with ``stale`` when that process is
    gone; None when it is not locked."""
    raw, info = read_lock(run_dir)
    if raw is None:
        return None
    if info is None:
        return "an unreadable lock"
    who = f"PID {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
    return who if _alive(info) else f"{who} (stale: that process is gone)"

