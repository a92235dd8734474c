"""Opening a run directory for writing without losing an earlier run.

A run directory (``output_dir/name``) belongs to one run. :class:`RunDirectory`
opens it for one writer: it refuses a directory that already holds files unless
the caller resumes that run (same config) or overwrites it, takes an exclusive
lock (``.lock``) for as long as the run writes, and only then writes
``config.toml``, atomically. A refused run changes nothing on disk.
"""

from __future__ import annotations

import logging
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import tomli_w

from fedpeft.config import ConfigError, RunConfig
from fedpeft.rundir.files import write_atomic
from fedpeft.rundir.lock import FileLock, LockHeldError, lock_holder

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_FILE = "config.toml"
FLAGS = "--resume (continue it, same config) or --overwrite (delete it and start again)"


class RunDirError(ConfigError):
    """A run directory that this run may not write to; the message says why and
    which flag or name to use instead."""


class RunDirectory:
    """The run directory of one run, held for writing.

    Use as a context manager; entering checks, locks and writes config.toml,
    leaving (normally or by an exception) releases the lock.

    Args:
        path: The run directory (created with its parents if missing).
        config: The run's configuration as a TOML-serialisable mapping.
        resume: Continue the run already in ``path``; its config.toml must
            equal ``config``.
        overwrite: Delete what ``path`` holds (after taking the lock) and
            start again. Only a directory holding a config.toml (a fedpeft
            run) is cleared.

    Raises (on entering):
        RunDirError: ``path`` holds files and neither flag is set; the config
            differs on resume; ``path`` is not a run directory; another process
            holds the lock (named by PID); both flags are set.
    """

    def __init__(
        self,
        path: Path,
        config: Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        if resume and overwrite:
            raise RunDirError(
                f"{path}: --resume and --overwrite contradict each other; choose one"
            )
        self.path = path
        self.config = dict(config)
        self.resume = resume
        self.overwrite = overwrite
        self._lock = FileLock(path / LOCK_FILE)

    def __enter__(self) -> Path:
        self.open()
        return self.path

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Check, lock, clear (overwrite) and write config.toml, in that order."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(
                f"run directory {self.path} exists and is a file; "
                "choose another name with --set name=..."
            )
        self._check(_contents(self.path))  # refuse before touching anything
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except LockHeldError as err:
            raise RunDirError(
                f"run directory {self.path} is in use: {err.holder} is writing "
                "to it. Wait for that run to finish (or stop it), or choose "
                "another name with --set name=..."
            ) from None
        try:
            existing = _contents(self.path)
            self._check(existing)  # again under the lock: it may have changed
            if self.overwrite and existing:
                logger.warning("--overwrite: deleting %s", _listing(existing))
                _clear(self.path, existing)
            if not (self.path / CONFIG_FILE).exists():
                write_atomic(self.path / CONFIG_FILE, tomli_w.dumps(self.config))
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """Release the lock (a no-op when not held)."""
        self._lock.release()

    def _check(self, existing: list[Path]) -> None:
        """Raise unless this run may write into a directory holding ``existing``."""
        if not existing:
            return
        config_path = self.path / CONFIG_FILE
        if not config_path.is_file():
            raise RunDirError(
                f"{self.path} is not a fedpeft run directory (it has no "
                f"{CONFIG_FILE}) and holds {_listing(existing)}; fedpeft will "
                "neither resume nor delete it. Choose another name with "
                "--set name=... or another output_dir"
            )
        if not (self.resume or self.overwrite):
            busy = lock_holder(self.path / LOCK_FILE)
            now = f"; {busy} is writing to it now" if busy else ""
            raise RunDirError(
                f"run directory {self.path} already holds a run "
                f"({_listing(existing)}){now}. Rerun with {FLAGS}, or choose "
                "another name with --set name=..."
            )
        if self.resume:
            _check_same_config(config_path, self.config)


def open_run_dir(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False
) -> RunDirectory:
    """The :class:`RunDirectory` of ``cfg`` (``cfg.run_dir``), not yet entered."""
    return RunDirectory(cfg.run_dir, cfg.to_dict(), resume=resume, overwrite=overwrite)


def _contents(path: Path) -> list[Path]:
    """What ``path`` holds besides the lock file ([] if it does not exist)."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.name != LOCK_FILE)


def _listing(paths: list[Path], limit: int = 6) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _check_same_config(path: Path, config: Mapping[str, Any]) -> None:
    try:
        stored = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise RunDirError(
            f"cannot resume {path.parent}: {path} is unreadable ({err}); "
            "start again with --overwrite"
        ) from None
    changed = _differences(stored, dict(config))
    if changed:
        raise RunDirError(
            f"{path.parent} holds a run with a different config "
            f"({'; '.join(changed)}); resume it with the same config ({path}), "
            "start it again with --overwrite, or choose another name with "
            "--set name=..."
        )


def _differences(
    old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 5
) -> list[str]:
    """``key: old -> new`` for each leaf that differs (at most ``limit``)."""
    a, b = _flatten(old), _flatten(new)
    missing = "(unset)"
    lines = [
        f"{key}: {a.get(key, missing)!r} -> {b.get(key, missing)!r}"
        for key in sorted(a.keys() | b.keys())
        if a.get(key, missing) != b.get(key, missing)
    ]
    more = [f"and {len(lines) - limit} more"] if len(lines) > limit else []
    return lines[:limit] + more


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _clear(path: Path, entries: list[Path]) -> None:
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    logger.info("cleared %s for --overwrite", path)
