"""Atomic report output: the whole report built in a staging folder and swapped in, the lock, the manifest.

A build writes into a hidden staging folder beside the output folder and, at
the end, swaps it in by renaming folders, so a reader (or a run killed by a
signal) never sees one section's new files beside another's old ones. An
exclusive lock beside the folder keeps two builds from writing the same output.

The manifest (``.scalelab-manifest.json``) lists every file a run produced, so the
next run can remove what it no longer produces and never touches anyone else's files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from pathlib import Path

from scalelab import __version__

MANIFEST = ".scalelab-manifest.json"
TMP_SUFFIX = ".scalelab-tmp"
FIGURE_DIR = "figures"
DATA_DIR = "data"


class Staging:
    """Files written under temporary names in the output folder, renamed together.

    ``path(rel)`` returns a temporary path beside the final one (same folder, so
    ``os.replace`` is an atomic rename on the same file system); ``commit``
    renames every staged file into place; ``abort`` deletes them.
    """

    def __init__(self, out_dir: Path, token: str):
        self.out_dir = out_dir
        self.token = token
        self.staged: list[tuple[Path, str]] = []

    def path(self, rel: str) -> Path:
        final = self.out_dir / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{self.token}{TMP_SUFFIX}"
        self.staged.append((tmp, rel))
        return tmp

    def write_text(self, rel: str, text: str) -> None:
        with open(self.path(rel), "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)

    def commit(self) -> list[str]:
        done = []
        for tmp, rel in self.staged:
            os.replace(tmp, self.out_dir / rel)
            done.append(rel)
        self.staged = []
        return done

    def abort(self) -> None:
        for tmp, _ in self.staged:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self.staged = []


def remove_leftover_temps(out_dir: Path) -> None:
    """Delete temporary files a crashed earlier run left (only our own suffix)."""
    for folder in (out_dir, out_dir / FIGURE_DIR, out_dir / DATA_DIR):
        if folder.is_dir():
            for path in folder.glob(f".*{TMP_SUFFIX}"):
                try:
                    path.unlink()
                except OSError:
                    pass


def read_manifest(out_dir: Path) -> list[str]:
    try:
        data = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        files = data.get("files", [])
        return [f for f in files if isinstance(f, str)]
    except (OSError, ValueError, AttributeError):
        return []


def write_manifest(out_dir: Path, files: list[str], token: str) -> None:
    tmp = out_dir / f".{MANIFEST}.{token}{TMP_SUFFIX}"
    body = {
        "generator": f"scalelab {__version__}",
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": sorted(set(files)),
    }
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST)


def safe_relative(rel: str) -> bool:
    """A manifest entry we may delete: relative, inside the folder, no parent steps."""
    path = Path(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


# --------------------------------------------------------------------------- whole-report staging

STAGE_TAG = ".scalelab-stage-"
OLD_TAG = ".scalelab-old-"
LOCK_TAG = ".scalelab-lock"
SCRATCH_PREFIX = "scalelab-report-"


class ReportBusyError(RuntimeError):
    """Another ``scalelab report`` holds the lock on the same output folder."""


class ReportInterrupted(BaseException):
    """Raised from the SIGTERM handler so the build unwinds through its clean-up.

    A BaseException, so the per-section ``except Exception`` that isolates a
    failing section does not swallow it.
    """


def sibling(out_dir: Path, tag: str, token: str = "") -> Path:
    """A hidden path beside ``out_dir`` (same file system, so a rename is atomic)."""
    return out_dir.parent / f".{out_dir.name}{tag}{token}"


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Hold an exclusive ``flock`` on a lock file beside ``out_dir`` for the whole build.

    The lock file sits beside the folder, not in it, because the folder itself is
    replaced by a rename at the end. A second build into the same folder fails at
    once with :class:`ReportBusyError` rather than waiting: a report takes minutes,
    and a CI job that silently queues behind another is harder to diagnose than
    one that says so. The kernel drops the lock when the process dies, even on SIGKILL.
    """
    import fcntl

    path = sibling(out_dir, LOCK_TAG)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReportBusyError(
                f"another scalelab report is writing to {out_dir} (lock {path}); wait for it or use another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(out_dir: Path) -> list[Path]:
    """Remove staging and old-copy folders beside ``out_dir`` and dead runs' scratch folders.

    Call with the lock held: then no live run owns a staging folder of this
    output. A missing output folder with an old copy beside it (a run killed
    between the two renames of the swap) gets its old copy back first.
    Scratch folders (``scalelab-report-<pid>-*`` in the temp dir) are removed
    only when their process is gone.
    """
    import shutil
    import tempfile

    removed = []
    olds = sorted(out_dir.parent.glob(f".{glob_escape(out_dir.name)}{OLD_TAG}*"))
    if not out_dir.exists() and olds:
        os.rename(olds[-1], out_dir)
        olds = olds[:-1]
    for path in olds + sorted(out_dir.parent.glob(f".{glob_escape(out_dir.name)}{STAGE_TAG}*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def carry_foreign(out_dir: Path, stage: Path, ours: set[str]) -> None:
    """Bring files the builder did not produce (not in ``ours``) from ``out_dir`` into ``stage``.

    Hard links where possible (no copy of a large foreign file), a copy otherwise.
    What the new build wrote wins over a foreign file of the same name.
    """
    import shutil

    if not out_dir.is_dir():
        return
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if rel in ours or rel == MANIFEST or path.name.endswith(TMP_SUFFIX):
            continue
        target = stage / rel
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
            continue
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def swap_in(stage: Path, out_dir: Path, token: str) -> None:
    """Replace ``out_dir`` by ``stage``: two renames, then the old folder is deleted.

    Readers see either the whole old report or the whole new one; a run killed
    between the renames leaves the old copy beside the folder, which
    :func:`sweep_stale` puts back on the next run.
    """
    import shutil

    old = sibling(out_dir, OLD_TAG, token)
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(stage, out_dir)
    shutil.rmtree(old, ignore_errors=True)
