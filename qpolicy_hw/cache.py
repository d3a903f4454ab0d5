"""Where qpolicy keeps what it builds once and reuses (Verilated cores, compiled fake-quant loops)."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "QPOLICY_CACHE"
"""Set to move the cache; else ``$XDG_CACHE_HOME/qpolicy`` (``~/.cache/qpolicy``)."""


def cache_dir(kind: str) -> Path:
    """The folder for one kind of cached build (``rtl``, ``kernels``); not created here."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qpolicy"
    return Path(root) / kind
