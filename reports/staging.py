"""Atomic report output: files staged under temporary names and renamed together, and the manifest.

The manifest (``.scalelab-manifest.json``) lists every file a run produced, so the
next run can remove what it no longer produces and never touches anyone else's files.
"""

from __future__ import annotations

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
