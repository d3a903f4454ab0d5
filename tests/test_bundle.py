"""The bundle: round trip, and every kind of bad bundle refused with a message that names it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from qpolicy_hw.bundle import ARRAYS_FILE, bundle_digest, load_bundle, npy_bytes, npz_bytes, sha256_bytes
from qpolicy_hw.errors import BundleError, ObservationError
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from qpolicy_train.quant_actor import QuantSpec


def test_round_trip_gives_the_same_codes(bundle_factory, tmp_path):
    path = bundle_factory()
    first = IntegerPolicy(load_bundle(path))
    copy = shutil.copytree(path, tmp_path / "copy")
    second = IntegerPolicy(load_bundle(copy))
    q = np.random.default_rng(1).integers(-32, 32, size=(500, first.obs_dim))
    assert np.array_equal(first.codes(q), second.codes(q))
    golden_in = np.load(path / "golden" / "q_in.npy")
    assert np.array_equal(second.codes(golden_in), np.load(path / "golden" / "q_out.npy"))


def test_bundle_contents_are_complete_and_hashed(bundle_factory):
    path = bundle_factory()
    meta = json.loads((path / "bundle.json").read_text())
    assert meta["schema"] == "qpolicy.bundle/1"
    assert set(meta["files"]) == {"arrays.npz", "float_state.npz", "model.onnx", "golden/q_in.npy",
                                  "golden/q_out.npy", "golden/obs.npy", "golden/actions.npy"}
    assert meta["digest"] == bundle_digest(meta)
    for name, digest in meta["files"].items():
        assert sha256_bytes((path / name).read_bytes()) == digest
    assert meta["quant"]["bits"] == {"input": 6, "core": 2, "output": 8}
    assert [layer["acc_bits"] > 0 for layer in meta["layers"]] == [True, True, True]
    assert meta["provenance"]["note"] == "test fixture"


def _rewrite_arrays(path, mutate):
    """Change arrays.npz and re-hash it, so that only the semantic check can catch the change."""
    meta = json.loads((path / "bundle.json").read_text())
    with np.load(path / ARRAYS_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    mutate(arrays, meta)
    data = npz_bytes(arrays)
    (path / ARRAYS_FILE).write_bytes(data)
    meta["files"][ARRAYS_FILE] = sha256_bytes(data)
    for name, a in arrays.items():
        if name in meta["arrays"]:
            meta["arrays"][name]["sha256"] = sha256_bytes(npy_bytes(a))
    meta["digest"] = bundle_digest(meta)
    (path / "bundle.json").write_text(json.dumps(meta))


def _wrong_schema(path):
    meta = json.loads((path / "bundle.json").read_text())
    meta["schema"] = "qpolicy.bundle/99"
    (path / "bundle.json").write_text(json.dumps(meta))


def _corrupt_arrays(path):
    data = bytearray((path / ARRAYS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / ARRAYS_FILE).write_bytes(bytes(data))


def _missing_array(path):
    _rewrite_arrays(path, lambda arrays, meta: arrays.pop("fc1.thresholds"))


def _wrong_shape(path):
    def mutate(arrays, meta):
        arrays["fc0.weight"] = arrays["fc0.weight"][:, :-1].copy()
        meta["arrays"]["fc0.weight"]["shape"] = list(arrays["fc0.weight"].shape)
    _rewrite_arrays(path, mutate)


def _non_monotone(path):
    def mutate(arrays, meta):
        t = arrays["fc2.thresholds"]
        t[0, 10], t[0, 11] = t[0, 11] + 5, t[0, 10]
    _rewrite_arrays(path, mutate)


def _weight_out_of_range(path):
    def mutate(arrays, meta):
        arrays["fc1.weight"][0, 0] = 7  # 2-bit weights live in [-2, 1]
    _rewrite_arrays(path, mutate)


def _missing_file(path):
    (path / "golden" / "q_out.npy").unlink()


def _not_json(path):
    (path / "bundle.json").write_text("{not json")


@pytest.mark.parametrize("breaker, reason", [
    (_wrong_schema, "schema 'qpolicy.bundle/99' is not supported"),
    (_corrupt_arrays, "SHA-256 mismatch for arrays.npz"),
    (_missing_array, "missing array(s) fc1.thresholds"),
    (_wrong_shape, "fc0.weight: shape"),
    (_non_monotone, "fc2.thresholds: not monotone"),
    (_weight_out_of_range, "fc1.weight: codes outside the 2-bit range"),
    (_missing_file, "missing file golden/q_out.npy"),
    (_not_json, "bundle.json is not valid JSON"),
])
def test_bad_bundles_are_refused_with_their_reason(bundle_factory, breaker, reason):
    path = bundle_factory()
    breaker(path)
    with pytest.raises(BundleError, match=re.escape(reason)):
        load_bundle(path)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a policy bundle"):
        load_bundle(tmp_path)


def test_cli_prints_one_line_without_traceback(bundle_factory):
    path = bundle_factory()
    _wrong_schema(path)
    proc = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "verify", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "schema 'qpolicy.bundle/99' is not supported" in proc.stderr


@pytest.mark.parametrize("obs, reason", [
    ([float("nan")] * 11, "NaN or Inf"),
    ([0.0] * 10 + [float("inf")], "NaN or Inf"),
    ([0.0] * 10, r"shape \(10,\), expected \(11,\)"),
    ([], r"shape \(0,\)"),
    ([[0.0] * 11], r"shape \(1, 11\)"),
    (["a"] * 11, "not a numeric vector"),
    (None, "shape"),
])
def test_act_rejects_bad_observations_with_a_typed_error(bundle_factory, obs, reason):
    pol = IntegerPolicy(load_bundle(bundle_factory()))
    with pytest.raises(ObservationError, match=reason):
        pol.act(obs)


def test_safe_action_is_the_centre_of_the_action_box(bundle_factory):
    bundle = load_bundle(bundle_factory())
    assert bundle.safe_action.tolist() == [0.0, 0.0, 0.0]


def test_float_backend_agrees_with_int_away_from_ties(bundle_factory):
    """The float backend (Brevitas forward) and the int runtime give the same actions (po2: always)."""
    from qpolicy_hw.runtime import make_policy

    path = bundle_factory(QuantSpec(6, 3, 8, 16, 2, "po2"))
    fp, ip = make_policy(path, "float"), make_policy(path, "int")
    rng = np.random.default_rng(2)
    for _ in range(200):
        obs = rng.normal(size=11) * 2
        assert np.array_equal(fp.act(obs), ip.act(obs))
