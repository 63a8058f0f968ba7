"""What ran the report: the checkout it belongs to and a description of the machine."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

from scalelab import __version__


def find_repo_root(start: Path | None = None) -> Path | None:
    """The scalelab checkout holding ``asv.conf.json``: near this package, else above ``start``."""
    here = Path(__file__).resolve().parents[1]
    candidates = [here]
    start = Path.cwd() if start is None else Path(start)
    candidates += [start.resolve(), *start.resolve().parents]
    for path in candidates:
        if (path / "asv.conf.json").is_file():
            return path
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git_commit(repo_root: Path | None) -> str | None:
    if repo_root is None or not (repo_root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_root, capture_output=True, text=True, timeout=10,
        )
        suffix = " (with uncommitted changes)" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return sha.stdout.strip()[:12] + suffix
    except (OSError, subprocess.SubprocessError):
        return None


def describe_machine(repo_root: Path | None = None) -> dict[str, str]:
    """What ran the report: CPU, cores, BLAS kernel, library versions, date, commit.

    The BLAS entry comes from ``threadpoolctl.threadpool_info()`` so it names the
    kernel OpenBLAS actually selected (e.g. ``Haswell``), not just the library.
    """
    import numpy as np

    info: dict[str, str] = {}
    info["CPU"] = _cpu_model()
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    info["Cores"] = f"{usable} usable of {logical} logical"
    try:
        info["Memory"] = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (AttributeError, ValueError, OSError):
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if blas:
            parts = []
            for pool in blas:
                # Which package shipped the library (numpy.libs, scipy.libs, torch/lib ...).
                owner = Path(str(pool.get("filepath", ""))).parent.name.replace(".libs", "") or "?"
                parts.append(
                    f"{pool.get('internal_api', '?')} {pool.get('version') or ''}".strip()
                    + f" ({owner}): kernel {pool.get('architecture') or '?'}"
                    + f", {pool.get('num_threads', '?')} threads"
                )
            info["BLAS"] = "; ".join(parts)
        else:
            info["BLAS"] = "no BLAS loaded"
    except Exception as exc:  # threadpoolctl is a dependency, but never let it break a report
        info["BLAS"] = f"unknown ({type(exc).__name__})"
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    info["Python"] = platform.python_version()
    info["NumPy"] = np.__version__
    try:
        import numba

        info["Numba"] = f"{numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)"
    except ImportError:
        info["Numba"] = "not installed"
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git_commit(repo_root)
    if commit:
        info["Git commit"] = commit
    info["scalelab"] = __version__
    return info
