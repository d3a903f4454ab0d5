"""Reading and writing a bundle's files: regular files only, bounded in size, arrays without pickle.

A bundle may come from a stranger, so nothing in a file steers an allocation before it is checked against a
limit: a file's size is read from the file system before its bytes, an .npz is read member by member
(the member count, each member's declared size and the running total of what decompression yields are
capped), and an .npy header's shape must account for exactly the bytes that follow before an array is
made. The limits sit far above the largest shipped bundle (Humanoid's: a 26 KB ``bundle.json``, a 639 KB
``float_state.npz``, 716 KB golden files of 1,028 rows) and far below what would hurt a board with 512 MB.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from qpolicy_hw.errors import BundleError

MAX_META_BYTES = 1 << 20
"""bundle.json (largest shipped: 26 KB)."""
MAX_NPZ_BYTES = 32 << 20
"""arrays.npz and float_state.npz, on disk and decompressed (largest shipped: 639 KB)."""
MAX_NPZ_MEMBERS = 64
"""Arrays in one .npz (shipped: 6-10)."""
MAX_ONNX_BYTES = 32 << 20
"""model.onnx (largest shipped: 0.5 MB); loading only hashes it."""
MAX_GOLDEN_BYTES = 16 << 20
"""Each golden .npy file (largest shipped: 716 KB)."""
MAX_GOLDEN_ROWS = 4096
"""Vectors in a golden file (shipped: 1,028 code vectors, 256 observations): bounds the self-test's time."""
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # npz members get a fixed time so equal content gives equal bytes
_NUMERIC_KINDS = "biuf"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    member = io.BytesIO()
    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return member.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A deterministic .npz (sorted members, fixed timestamps, no pickle)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME), npy_bytes(arrays[name]))
    return buf.getvalue()


def regular_file(root: Path, name: str, limit: int) -> bytes:
    """The bytes of ``root/name``: a regular file (not a link, FIFO or directory) inside ``root``, at most
    ``limit`` bytes, refused by its size before it is read."""
    path = root / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"{root}: missing file {name}") from None
    except OSError as exc:
        raise BundleError(f"{root}: cannot read {name} ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise BundleError(f"{root}: {name} is a symbolic link; bundle files must be regular files in the bundle")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{root}: {name} is not a regular file")
    if st.st_size > limit:
        raise BundleError(f"{root}: {name} is {st.st_size} bytes, more than the {limit}-byte limit for this file")
    if not path.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"{root}: {name} resolves outside the bundle")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"{root}: cannot read {name} ({exc.strerror})") from None
    if len(data) > limit:   # it grew between the size check and the read
        raise BundleError(f"{root}: {name} is more than the {limit}-byte limit for this file")
    return data


def read_npy(data: bytes, name: str) -> np.ndarray:
    """A numeric array from .npy bytes; the header's shape and dtype must account for exactly the bytes that
    follow it, checked before the array is made (a header cannot make loading allocate)."""
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"npy format version {version} is not read")
    except Exception as exc:  # not an .npy, a malformed header, an unknown dtype
        raise BundleError(f"{name}: unreadable array ({type(exc).__name__}: {str(exc)[:80]})") from None
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS or dtype.subdtype is not None or dtype.names:
        raise BundleError(f"{name}: not a numeric array (dtype {str(dtype)[:40]})")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BundleError(f"{name}: malformed shape {shape!r}"[:120])
    count = math.prod(shape)
    offset = fp.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise BundleError(f"{name}: the header declares shape {tuple(shape)} ({count * dtype.itemsize} bytes), "
                          f"the file holds {len(data) - offset} bytes of data")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def read_npz(data: bytes, file_name: str, expected: set[str] | None,
             limit: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray]:
    """The arrays of an .npz held in ``data``, member by member, with at most ``MAX_NPZ_MEMBERS`` members and
    ``limit`` bytes decompressed in all; with ``expected``, exactly those members (no more, no fewer)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BundleError(f"{file_name}: unreadable ({str(exc)[:80]})") from None
    with zf:
        if len(infos) > MAX_NPZ_MEMBERS:
            raise BundleError(f"{file_name}: {len(infos)} members, more than the limit of {MAX_NPZ_MEMBERS}")
        declared = sum(info.file_size for info in infos)
        if declared > limit:
            raise BundleError(f"{file_name}: members declare {declared} bytes, more than the {limit}-byte limit")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.endswith(".npy") or "/" in info.filename or info.filename[:-4] in members:
                raise BundleError(f"{file_name}: member {info.filename[:60]!r} is not an array")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise BundleError(f"{file_name}: member {info.filename[:60]} uses an unsupported compression")
            members[info.filename[:-4]] = info
        if expected is not None and set(members) != expected:
            extra, missing = sorted(set(members) - expected), sorted(expected - set(members))
            raise BundleError(f"{file_name}: " + (f"undeclared member(s) {', '.join(extra)[:120]}" if extra else
                                                  f"missing array(s) {', '.join(missing)[:120]}"))
        arrays, total = {}, 0
        for key, info in members.items():
            chunks = []
            try:
                with zf.open(info) as member:   # zipfile stops at the declared size and checks the CRC there
                    while chunk := member.read(1 << 20):
                        total += len(chunk)
                        if total > limit:
                            raise BundleError(f"{file_name}: decompresses to more than the {limit}-byte limit")
                        chunks.append(chunk)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as exc:
                raise BundleError(f"{file_name}: unreadable member {key[:60]} ({str(exc)[:80]})") from None
            arrays[key] = read_npy(b"".join(chunks), f"{file_name}:{key[:60]}")
        return arrays
