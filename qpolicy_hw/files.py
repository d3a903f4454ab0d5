"""Output folders, checked before any long step: a run that cannot write must say so at once."""
from __future__ import annotations

from pathlib import Path

from qpolicy_hw.errors import QpolicyError


def writable_dir(path: str | Path, error: type[QpolicyError] = QpolicyError, what: str = "output directory") -> Path:
    """``path`` created if needed and proven writable; else ``error`` naming the folder and the reason."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write_test").touch()
        (out / ".write_test").unlink()
    except OSError as exc:
        raise error(f"cannot write to {what} {out}: {exc.strerror or exc}") from None
    return out
