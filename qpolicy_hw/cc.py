"""Compile generated C into a cached shared library (the system C compiler, stdlib only).

Used where a compiled loop must give the same numbers as its Python reference: the training side's
fake-quant loops and the ``int`` runtime's compiled ``act()``. Every flag set here keeps IEEE semantics:
no fast-math, no fused multiply-add (``-ffp-contract=off``), so each product and quotient is rounded as
numpy and torch round it. ``-march=native`` makes a library valid on this CPU only, so the CPU's
features are part of the cache key, with the source, the flags and the compiler's version.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from qpolicy_hw.cache import cache_dir

CFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC")
PORTABLE_CFLAGS = tuple(flag for flag in CFLAGS if flag != "-march=native")
"""For compilers (some ARM ones) that do not take ``-march=native``; the same numbers, fewer vector units
(a 128-wide integer layer runs about 3x slower without AVX2)."""


def compiler() -> str:
    """The C compiler ($CC, else cc or gcc on PATH), or :class:`OSError`."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc/gcc) on PATH")
    return cc


def _cpu_flags() -> str:
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def shared_library(source: str, name: str, kind: str, cflags: tuple[str, ...] = CFLAGS) -> Path:
    """Path of ``source`` compiled with ``cflags`` under the ``kind`` cache folder, built at most once.

    Raises :class:`OSError` (no compiler, unwritable cache) or :class:`subprocess.CalledProcessError`."""
    cc = compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([source, " ".join(cflags), version, sys.platform, platform.machine(),
                                     _cpu_flags()]).encode()).hexdigest()[:16]
    target = cache_dir(kind) / f"{name}_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, lib = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            src.write_text(source)
            subprocess.run([cc, *cflags, str(src), "-o", str(lib), "-lm"], capture_output=True, text=True, check=True)
            os.replace(lib, target)   # atomic: parallel processes may build the same library at once
    return target
