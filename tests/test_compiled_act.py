"""The int backend's compiled act(): bit-identical to the numpy reference, or not used, saying why."""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.errors import ObservationError
from qpolicy_hw.runtime import make_policy
from qpolicy_hw.runtime.compiled import CompiledAct
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from qpolicy_train.quant_actor import QuantSpec

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                              reason="no C compiler")


def _reference_actions(ref: IntegerPolicy, obs: np.ndarray) -> np.ndarray:
    """decode(codes(quantize(obs))) in batches: the reference path, not act()."""
    q = np.array([ref.quantize(o) for o in obs])
    return ref.decode(ref.codes(q))


@needs_cc
@pytest.mark.parametrize("which", ["fixture", "fixture-8bit-core", "policies/hopper/selected",
                                   "policies/walker2d/selected"])
def test_compiled_act_equals_the_reference_on_golden_and_100k_random(bundle_factory, which):
    if which == "fixture":
        path = bundle_factory()
    elif which == "fixture-8bit-core":       # 8-bit hidden codes: the binary threshold search, wider accumulators
        path = bundle_factory(QuantSpec(8, 8, 8, 32, 2, "float"))
    else:
        path = which
    bundle = load_bundle(path)
    policy = make_policy(bundle, "int")
    assert policy.act_path.startswith("compiled C"), policy.act_path
    ref = IntegerPolicy(bundle)
    obs = np.vstack([np.load(bundle.path / "golden" / "obs.npy"), bundle.random_observations(100_000, 11)])
    got = np.array([policy.act(o) for o in obs])
    assert np.array_equal(got, _reference_actions(ref, obs))          # every action, bit for bit
    assert np.array_equal(np.array([policy.act(o) for o in np.load(bundle.path / "golden" / "obs.npy")]),
                          np.load(bundle.path / "golden" / "actions.npy"))


@needs_cc
@pytest.mark.parametrize("bad, words", [
    ([np.nan] + [0.0] * 10, "NaN or Inf"), ([0.0] * 10 + [np.inf], "NaN or Inf"), ([0.0] * 10, "shape (10,)"),
    (np.zeros((1, 11)), "shape (1, 11)"), (3.0, "shape ()"), (["a"] * 11, "not a numeric vector"),
])
def test_unusable_observations_are_refused_as_by_numpy(bundle_factory, bad, words):
    policy = make_policy(bundle_factory(), "int")
    assert policy.act_path.startswith("compiled C")
    with pytest.raises(ObservationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        policy.act(bad)
    ok = np.zeros(11)
    assert np.array_equal(policy.act(ok), IntegerPolicy(policy.bundle).act(ok))   # and it keeps serving
    assert np.array_equal(policy.act(list(ok)), policy.act(ok.astype(np.float32)))


@needs_cc
def test_the_software_core_refuses_codes_outside_the_input_range(bundle_factory):
    bundle = load_bundle(bundle_factory())
    lib = CompiledAct(bundle)._lib
    q_in = (ctypes.c_int32 * bundle.obs_dim)(*([0] * bundle.obs_dim))
    q_out = (ctypes.c_int32 * bundle.act_dim)()
    assert lib.qpolicy_core_sw(q_in, q_out) == 0
    q_in[3] = 1 << (bundle.bits["input"] - 1)         # one past the top code
    assert lib.qpolicy_core_sw(q_in, q_out) == -1


def test_without_a_compiler_numpy_serves_and_says_why(bundle_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("QPOLICY_CACHE", str(tmp_path / "cache"))     # nothing cached to fall back on
    policy = make_policy(bundle_factory(), "int")
    assert policy.act_path.startswith("numpy (no compiled act:") and "no-such-cc" in policy.act_path
    obs = np.load(policy.bundle.path / "golden" / "obs.npy")
    assert np.array_equal(np.array([policy.act(o) for o in obs]), np.load(policy.bundle.path / "golden" / "actions.npy"))


def test_disabled_by_the_environment(bundle_factory, monkeypatch):
    monkeypatch.setenv("QPOLICY_NO_COMPILED_ACT", "1")
    assert make_policy(bundle_factory(), "int").act_path == \
        "numpy (the compiled act is disabled by QPOLICY_NO_COMPILED_ACT)"


@needs_cc
def test_a_library_that_disagrees_is_not_used(bundle_factory, monkeypatch):
    from qpolicy_hw.runtime import compiled

    bundle = load_bundle(bundle_factory())
    honest = IntegerPolicy(bundle)
    calls = {"n": 0}

    def reference_off_by_one_late(obs):       # the self-test must look past its first observations
        calls["n"] += 1
        action = honest.act(obs)
        return action + 1e-12 if calls["n"] == 3000 else action

    fast, why = compiled.compiled_act(bundle, reference_off_by_one_late)
    assert fast is None and "disagreed with the reference" in why


@needs_cc
def test_a_compiler_without_march_native_builds_the_portable_library(bundle_factory, monkeypatch, tmp_path):
    cc = tmp_path / "cc-without-native"
    cc.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -march=native ] && exit 1; done\n'
                  f'exec {shutil.which("gcc") or shutil.which("cc")} "$@"\n')
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("QPOLICY_CACHE", str(tmp_path / "cache"))
    policy = make_policy(bundle_factory(), "int")
    assert policy.act_path.startswith("compiled C"), policy.act_path
    assert len(list((tmp_path / "cache" / "act").glob("act_*.so"))) == 1


@needs_cc
def test_the_software_core_takes_int64_accumulators_when_int32_would_overflow(bundle_factory, monkeypatch, tmp_path):
    """W, B and T all times 2^24: every comparison acc >= T keeps its answer, so the codes must be the original
    bundle's, while the accumulators need 64 bits."""
    from qpolicy_hw.cc import shared_library
    from qpolicy_hw.host_c import core_source, host_library, single_unit

    bundle = load_bundle(bundle_factory())
    k = 1 << 24

    class Scaled:
        def __getattr__(self, name):
            return getattr(bundle, name)

        def weights(self, i):
            return bundle.weights(i).astype(np.int64) * k

        def bias(self, i):
            return bundle.bias(i).astype(np.int64) * k

        def thresholds(self, i):
            return bundle.thresholds(i).astype(np.int64) * k

    source = core_source(Scaled())
    assert "int64_t acc" in source and "int32_t acc" not in source
    files = host_library(bundle, latency=0)
    files["qpolicy_core_sw.c"] = source
    monkeypatch.setenv("QPOLICY_CACHE", str(tmp_path / "cache"))
    lib = ctypes.CDLL(str(shared_library(single_unit(files), "scaled", "act")))
    lo, hi = bundle.layers[0].in_range
    q = np.random.default_rng(3).integers(lo, hi + 1, size=(3000, bundle.obs_dim)).astype(np.int32)
    q[0], q[1] = lo, hi
    out = np.zeros((len(q), bundle.act_dim), dtype=np.int32)
    for row, dest in zip(q, out, strict=True):
        assert lib.qpolicy_core_sw(row.ctypes.data_as(ctypes.c_void_p), dest.ctypes.data_as(ctypes.c_void_p)) == 0
    assert np.array_equal(out, IntegerPolicy(bundle).codes(q))
