"""Numba cache entries that go stale when a kernel module they compile in changes.

Numba keys a cached function by its own source file only (its stamp is that
file's SHA-256 here, mtime and size in older releases). Our kernels compile
code from other files into their machine code: the LLVM-IR intrinsics of
``_tiles.py``, the ``inline="always"`` helpers and fast-math flag sets of
``_vecmath.py``, constants and jitted callees of other kernel modules. When
only such a file changes (an upgrade in place, a checkout), Numba would load
the old machine code of every caller without noticing.

:func:`install` puts three cache locators in front of Numba's own, one per
place Numba keeps a cache (``NUMBA_CACHE_DIR``, ``__pycache__`` beside the
source, the user-wide directory); each is Numba's locator of that place with
one change: for functions of a ``scalelab.*`` module the source stamp is
Numba's stamp plus a SHA-256 over the kernel modules the function's file
imports, followed through their own imports. A changed dependency changes
the stamp, so Numba's own check finds the index stale, compiles afresh and
overwrites the entry. Nothing is deleted and no file of ours is written, so
concurrent processes meet only Numba's own (atomic) cache writes, and the
cache stays wherever Numba would put it.

The dependencies are read off the import lines (``from scalelab.kernels.X
import ...``, ``from scalelab.kernels import X``), anywhere in the file, so a
lazy import inside a function counts too. Each file is read once per process
(Numba asks for the stamp of every cached function as it is decorated): the
code a process compiles is that of the modules it imported, so the stamp
describes it even if a file changes on disk while the process runs.
``NUMBA_CACHE_LOCATOR_CLASSES`` (the user choosing the locators) bypasses
this. Other packages' functions are left to Numba's locators.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re

from numba.core import caching

__all__ = ["install", "dependency_files", "dependency_digest"]

_KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))

# "from scalelab.kernels.X import", "import scalelab.kernels.X", "from scalelab.kernels import X, Y" or "(X,\n Y)"
_IMPORT = re.compile(r"^[ \t]*(?:from|import)[ \t]+scalelab\.kernels(?:\.(\w+)|[ \t]+import[ \t]+\(?([\w\s,]+?)\)?$)",
                     re.MULTILINE)


@functools.lru_cache(maxsize=None)
def _scan(path: str) -> tuple[str, frozenset[str]]:
    """SHA-256 of the file at ``path`` and the kernel module files it imports (read once per process)."""
    with open(path, "rb") as f:
        data = f.read()
    names = set()
    for m in _IMPORT.finditer(data.decode("utf-8", "replace")):
        if m.group(1):
            names.add(m.group(1))
        else:
            names.update(part.split()[0] for part in m.group(2).split(",") if part.strip())
    files = (os.path.join(_KERNELS_DIR, name + ".py") for name in names)
    return hashlib.sha256(data).hexdigest(), frozenset(f for f in files if os.path.isfile(f))


def dependency_files(path) -> list[str]:
    """The kernel module files ``path`` imports, directly or through them, sorted, ``path`` itself left out."""
    path = os.path.abspath(path)
    seen, todo = set(), [path]
    while todo:
        for dep in _scan(todo.pop())[1]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    seen.discard(path)
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def dependency_digest(path) -> str:
    """SHA-256 over the names and content hashes of :func:`dependency_files` of ``path``."""
    h = hashlib.sha256()
    for dep in dependency_files(path):
        h.update(f"{os.path.basename(dep)}:{_scan(dep)[0]}\n".encode())
    return h.hexdigest()


class _DependencyStamp:
    """Mixin for a Numba source-file locator: the stamp also covers the kernel modules compiled in."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if not str(getattr(py_func, "__module__", "")).startswith("scalelab."):
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return super().get_source_stamp(), dependency_digest(self._py_file)


def _numba_class(name: str):
    # public names in recent Numba releases, underscored in older ones
    return getattr(caching, name, None) or getattr(caching, "_" + name)


_LOCATORS = tuple(type(f"ScalelabDeps{base.__name__.lstrip('_')}", (_DependencyStamp, base), {})
                  for base in map(_numba_class, ("UserProvidedCacheLocator", "InTreeCacheLocator",
                                                 "UserWideCacheLocator")))


def install() -> None:
    """Put the dependency-aware locators first in Numba's list (once; later calls do nothing).

    Must run before the first ``@njit(cache=True)`` of a scalelab module is decorated:
    ``scalelab.kernels`` calls it on import, and every jitted module imports from there.
    """
    classes = _numba_class("CacheImpl")._locator_classes
    if not any(isinstance(c, type) and issubclass(c, _DependencyStamp) for c in classes):
        classes[0:0] = _LOCATORS
