"""A corruption suite: damaged copies of a tiny bundle across every field and file.

Each copy must be refused with a one-line :class:`BundleError`, or be proven harmless: the ``int`` runtime
gives identical actions on raw observations. No case may raise anything else or hang (each runs under a
time limit). Edits to bundle.json are tried twice: as they are (the digest catches them) and re-digested
(what a careless tool or a deliberate edit leaves), where the field checks and the golden self-test
have to catch them.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from qpolicy_hw.bundle import (
    ARRAYS_FILE,
    KNOWN_FILES,
    BundleError,
    bundle_digest,
    load_bundle,
    npz_bytes,
    sha256_bytes,
)
from qpolicy_hw.runtime.int_backend import IntegerPolicy

TIME_LIMIT_S = 10


@contextmanager
def time_limit(seconds: int):
    def expired(signum, frame):
        raise TimeoutError(f"loading took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _actions(bundle, obs) -> np.ndarray:
    policy = IntegerPolicy(bundle)
    return np.array([policy.act(o) for o in obs])


def _leaves(value, path=()):
    """Every leaf of bundle.json, and every list as a whole (of a numeric list, only the first element)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        yield path
        numeric = all(isinstance(v, (int, float)) for v in value)
        for i, v in enumerate(value[:1] if numeric else value):
            yield from _leaves(v, path + (i,))
    else:
        yield path


def _mutations(value):
    """Wrong types, signs, sizes and magnitudes for one leaf."""
    out = [("none", None), ("string", "x"), ("bool", True), ("dict", {"a": 1})]
    if isinstance(value, bool):
        out.append(("flip", not value))
    elif isinstance(value, (int, float)):
        out += [("negative", -value - 1), ("zero", 0), ("huge", 1e308), ("tiny", 5e-324), ("plus1", value + 1),
                ("float", value + 0.5)]
    elif isinstance(value, list):
        out += [("short", value[:-1]), ("long", value + value[-1:]), ("empty", [])]
    elif isinstance(value, str):
        out += [("other", value + "x"), ("empty", "")]
    return out


def _get(meta, path):
    for p in path:
        meta = meta[p]
    return meta


def _set(meta, path, value):
    _get(meta, path[:-1])[path[-1]] = value


def _cases(meta):
    for path in dict.fromkeys(_leaves({k: v for k, v in meta.items() if k not in ("provenance", "digest")})):
        original = _get(meta, path)
        for name, value in _mutations(original):
            if json.dumps(value) == json.dumps(original):
                continue
            yield "/".join(map(str, path)), name, lambda m, p=path, v=value: _set(m, p, copy.deepcopy(v))
        if isinstance(path[-1], str):
            yield "/".join(map(str, path)), "deleted", lambda m, p=path: _get(m, p[:-1]).pop(p[-1])
            yield "/".join(map(str, path)), "renamed", lambda m, p=path: _get(m, p[:-1]).__setitem__(
                p[-1] + "_x", _get(m, p[:-1]).pop(p[-1]))


def _judge(path: Path, reference_obs: np.ndarray, reference_actions: np.ndarray) -> str:
    """'refused' (one line), 'harmless' (identical actions), or raise: anything else is a failure."""
    try:
        with time_limit(TIME_LIMIT_S):
            bundle = load_bundle(path)
    except BundleError as exc:
        assert "\n" not in str(exc), f"a multi-line refusal: {exc}"
        return "refused"
    actions = _actions(bundle, reference_obs)
    assert np.array_equal(actions, reference_actions), "loaded, and serves other actions"
    return "harmless"


def test_every_field_of_bundle_json(bundle_factory, tmp_path):
    source = bundle_factory()
    original = load_bundle(source)
    obs = np.vstack([original.random_observations(256, 99, spreads=(0.5, 1.0, 3.0, 12.0)), np.load(source / "golden" / "obs.npy")])
    want = _actions(original, obs)
    meta0 = json.loads((source / "bundle.json").read_text())
    verdicts: dict[str, int] = {}
    work = tmp_path / "case"
    shutil.copytree(source, work)
    cases = list(_cases(meta0))
    assert len(cases) > 300
    for field, name, mutate in cases:
        for redigest in (False, True):
            meta = copy.deepcopy(meta0)
            mutate(meta)
            if redigest:
                try:
                    meta["digest"] = bundle_digest(meta)
                except (TypeError, ValueError):  # not digestible (e.g. a key renamed to a non-string): as is
                    pass
            (work / "bundle.json").write_text(json.dumps(meta))
            try:
                verdict = _judge(work, obs, want)
            except Exception as exc:
                pytest.fail(f"{field} {name} (re-digested: {redigest}): {type(exc).__name__}: {exc}")
            if not redigest:
                assert verdict == "refused", f"{field} {name}: an edit without a new digest was accepted"
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
    assert verdicts["refused"] > len(cases)      # every plain edit, and most re-digested ones
    print(f"{len(cases)} edits x 2: {verdicts}")


def _refused(path: Path, match: str) -> None:
    with time_limit(TIME_LIMIT_S), pytest.raises(BundleError, match=match) as info:
        load_bundle(path)
    assert "\n" not in str(info.value)


def _redigest(path: Path, edit) -> None:
    meta = json.loads((path / "bundle.json").read_text())
    edit(meta)
    meta["digest"] = bundle_digest(meta)
    (path / "bundle.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("name", KNOWN_FILES[:1] + KNOWN_FILES[2:])
def test_every_file_flipped_truncated_or_replaced(bundle_factory, tmp_path, name):
    source = bundle_factory()
    if name not in json.loads((source / "bundle.json").read_text())["files"]:
        pytest.skip(f"the fixture has no {name}")
    data = (source / name).read_bytes()
    for k, damage in enumerate([
        lambda p: p.write_bytes(data[:len(data) // 2]),                               # truncated
        lambda p: p.write_bytes(data[:7] + bytes([data[7] ^ 1]) + data[8:]),          # one bit in the header
        lambda p: p.write_bytes(data[:-1] + bytes([data[-1] ^ 0x80])),                # one bit at the end
        lambda p: p.write_bytes(b""),                                                  # empty
        lambda p: (p.unlink(), p.mkdir()),                                            # a directory
        lambda p: (p.unlink(), os.mkfifo(p)),                                         # a FIFO: must not block
        lambda p: p.unlink(),                                                          # missing
    ]):
        work = tmp_path / f"c{k}"
        shutil.copytree(source, work)
        damage(work / name)
        _refused(work, r"SHA-256 mismatch|not a regular file|missing file")


def test_links_and_paths_outside_the_bundle(bundle_factory, tmp_path):
    source = bundle_factory()
    outside = tmp_path / "outside.npz"
    shutil.copy(source / ARRAYS_FILE, outside)
    # a symlink to a file with the right content: still refused (bundle files are regular files)
    work = tmp_path / "link"
    shutil.copytree(source, work)
    (work / ARRAYS_FILE).unlink()
    (work / ARRAYS_FILE).symlink_to(outside)
    _refused(work, "symbolic link")
    # a whole golden/ directory linked to elsewhere
    work = tmp_path / "dirlink"
    shutil.copytree(source, work)
    shutil.move(work / "golden", tmp_path / "golden_elsewhere")
    (work / "golden").symlink_to(tmp_path / "golden_elsewhere")
    _refused(work, "outside the bundle")
    # files entries that point outside, absolute or to another name
    for bad in ("../outside.npz", str(outside), "golden/../../outside.npz", "notes.txt"):
        work = tmp_path / f"name{abs(hash(bad))}"
        shutil.copytree(source, work)
        _redigest(work, lambda m, b=bad: m["files"].__setitem__(b, sha256_bytes(outside.read_bytes())))
        _refused(work, "which is not a bundle file")


def test_arrays_npz_members_are_exactly_the_declared_ones(bundle_factory, tmp_path):
    source = bundle_factory()
    with np.load(source / ARRAYS_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    for label, change, match in [
        ("extra", lambda a: a.__setitem__("payload", np.zeros(3)), "undeclared member"),
        ("missing", lambda a: a.pop("fc0.bias"), "missing array"),
    ]:
        work = tmp_path / label
        shutil.copytree(source, work)
        changed = dict(arrays)
        change(changed)
        data = npz_bytes(changed)
        (work / ARRAYS_FILE).write_bytes(data)
        _redigest(work, lambda m, d=data: m["files"].__setitem__(ARRAYS_FILE, sha256_bytes(d)))
        _refused(work, match)


def test_semantic_edits_that_were_re_hashed_are_caught_by_the_golden_self_test(bundle_factory, tmp_path):
    """One digit of a normalization or scale field, or one action table entry, re-hashed everywhere."""
    from qpolicy_hw.bundle import npy_bytes

    source = bundle_factory()
    edits = {
        "mean": lambda m: m["normalization"]["mean"].__setitem__(0, m["normalization"]["mean"][0] + 0.5),
        "var": lambda m: m["normalization"]["var"].__setitem__(2, m["normalization"]["var"][2] * 4),
        "input_scale": lambda m: m["quant"].__setitem__("input_scale", m["quant"]["input_scale"] * 1.25),
        "clip": lambda m: m["normalization"].__setitem__("clip", 1.0),
    }
    for label, edit in edits.items():
        work = tmp_path / label
        shutil.copytree(source, work)
        _redigest(work, edit)
        _refused(work, "golden actions")
    work = tmp_path / "table"
    shutil.copytree(source, work)
    with np.load(source / ARRAYS_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["action_table"] = arrays["action_table"].copy()
    arrays["action_table"][:, 128:] *= 0.5          # every positive code: half the action
    data = npz_bytes(arrays)
    (work / ARRAYS_FILE).write_bytes(data)

    def rehash(m):
        m["files"][ARRAYS_FILE] = sha256_bytes(data)
        m["arrays"]["action_table"]["sha256"] = sha256_bytes(npy_bytes(arrays["action_table"]))
    _redigest(work, rehash)
    _refused(work, "golden actions")


def test_deep_nesting_and_non_json_numbers(bundle_factory, tmp_path):
    source = bundle_factory()
    text = (source / "bundle.json").read_text()
    for label, content, match in [
        ("deep", text[:-2] + ', "provenance": ' + "[" * 200_000 + "]" * 200_000 + "}\n", "nested too deeply"),
        ("nan", text.replace('"clip": 10.0', '"clip": NaN'), "not a number JSON allows"),
        ("binary", None, "not UTF-8"),
    ]:
        work = tmp_path / label
        shutil.copytree(source, work)
        if content is None:
            (work / "bundle.json").write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
        else:
            (work / "bundle.json").write_text(content)
        _refused(work, match)
