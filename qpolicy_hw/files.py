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


def writable_file(path: str | Path, error: type[QpolicyError] = QpolicyError) -> Path:
    """``path`` as a file that can be written (its folder exists and takes a new file; it is not a folder),
    checked before any long step; else ``error`` naming the file and the reason. Nothing is left behind."""
    import tempfile

    out = Path(path)
    if out.is_dir():
        raise error(f"{out} is a folder; give a file name")
    try:
        with tempfile.NamedTemporaryFile(dir=out.parent if str(out.parent) else ".", prefix=f".{out.name}."):
            pass
    except OSError as exc:
        raise error(f"{out}: {exc.strerror or exc}") from None
    return out
