"""Rung 1: the Brevitas float forward vs the integer contract (the int runtime is the reference)."""
from __future__ import annotations

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.errors import ObservationError
from qpolicy_hw.runtime.int_backend import IntegerPolicy, requantize, shift_requantize
from qpolicy_train.float_reference import TIE_RATE_BOUND, float_vs_int
from qpolicy_train.quant_actor import QuantSpec

BITS = [2, 3, 4, 6, 8]


@pytest.mark.parametrize("mode", ["float", "po2"])
@pytest.mark.parametrize("bits", BITS)
def test_float_forward_matches_integer_contract(bundle_factory, bits, mode):
    """>= 10k vectors of each input kind (Gaussian, uniform, tie-grid, grid), every stage compared."""
    bundle = load_bundle(bundle_factory(QuantSpec(bits, bits, bits, 32, 2, mode), seed=bits))
    result = float_vs_int(bundle, n_random=10_000, seed=bits)
    assert result["vectors"] == 40_000
    assert result["host_quantization_mismatches"] == 0
    # Every disagreement starts at a float tie (distance to the rounding point within the float32 bound).
    assert result["first_disagreements_not_at_ties"] == 0, result["not_tie_examples"]
    assert result["rate"] <= TIE_RATE_BOUND
    assert result["mismatches"] / result["codes"] <= TIE_RATE_BOUND
    if mode == "po2":  # every float op is exact with power-of-two scales and an integer bias
        assert result["all_stage_mismatches"] == 0
    assert result["pass"]


def test_tie_classifier_rejects_a_wrong_threshold(bundle_factory):
    """Corrupting one threshold by one step makes real (non-tie) mismatches, and the rung says so."""
    bundle = load_bundle(bundle_factory(QuantSpec(4, 4, 8, 32, 2, "float"), seed=3))
    t = bundle.arrays["fc0.thresholds"]
    # Move a mid threshold of every channel by 40% of its step: codes near it now disagree without a tie.
    mid = t.shape[1] // 2
    step = np.maximum((t[:, mid + 1] - t[:, mid]) * 2 // 5, 1)
    t[:, mid] = np.minimum(t[:, mid] + step, t[:, mid + 1])
    result = float_vs_int(bundle, n_random=2000, seed=0)
    assert result["first_disagreements_not_at_ties"] > 0
    assert not result["pass"]


def test_shift_form_equals_thresholds_for_po2(bundle_factory):
    """The shift-and-saturate form is recorded only where it gives identical codes: check every
    accumulator value each channel can reach (thresholds beyond that range are clamped)."""
    bundle = load_bundle(bundle_factory(QuantSpec(6, 3, 8, 16, 2, "po2"), seed=5))
    for i, layer in enumerate(bundle.layers):
        assert layer.shift is not None
        lo, hi = layer.out_range
        w = bundle.weights(i).astype(np.int64)
        qlo, qhi = layer.in_range
        b = bundle.bias(i).astype(np.int64)
        ch_min = b + np.minimum(w * qlo, w * qhi).sum(1)
        ch_max = b + np.maximum(w * qlo, w * qhi).sum(1)
        for c in range(layer.out_features):
            acc = np.arange(ch_min[c], ch_max[c] + 1)
            by_threshold = requantize(acc[:, None], bundle.thresholds(i)[c:c + 1].astype(np.int64), lo)[:, 0]
            by_shift = shift_requantize(acc, layer.shift, lo, hi)
            assert np.array_equal(by_threshold, by_shift), (layer.name, c)


def test_float_scales_record_no_shift(bundle_factory):
    bundle = load_bundle(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")))
    assert all(layer.shift is None for layer in bundle.layers)


@pytest.mark.parametrize("mode", ["float", "po2"])
def test_accumulator_bound_holds_at_the_extremes(bundle_factory, mode):
    """The proven accumulator width holds for the worst-case input codes of every layer."""
    bundle = load_bundle(bundle_factory(QuantSpec(8, 8, 8, 32, 2, mode), seed=11))
    for i, layer in enumerate(bundle.layers):
        w = bundle.weights(i).astype(np.int64)
        lo, hi = layer.in_range
        q_max = np.where(w > 0, hi, lo)  # per channel, the input that maximises W q
        q_min = np.where(w > 0, lo, hi)
        acc_max = (w * q_max).sum(1) + bundle.bias(i)
        acc_min = (w * q_min).sum(1) + bundle.bias(i)
        amin, amax = -(1 << (layer.acc_bits - 1)), (1 << (layer.acc_bits - 1)) - 1
        assert acc_max.max() == layer.acc_max and acc_min.min() == layer.acc_min
        assert amin <= acc_min.min() and acc_max.max() <= amax


def test_requantize_counts_thresholds():
    t = np.array([[-1, 2, 2, 5]])
    acc = np.array([[-5], [-1], [1], [2], [5], [9]])
    assert requantize(acc, t, lo=0)[:, 0].tolist() == [0, 1, 1, 3, 4, 4]
    assert requantize(acc, t, lo=-2)[:, 0].tolist() == [-2, -1, -1, 1, 2, 2]


def test_shift_requantize_rounds_half_to_even():
    acc = np.array([-6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6, 7])
    # acc / 2 = -3, -2.5, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2.5, 3, 3.5 -> half to even
    assert shift_requantize(acc, 1, -8, 7).tolist() == [-3, -2, -2, -1, 0, 0, 0, 1, 2, 2, 3, 4]
    assert shift_requantize(acc, 1, 0, 2).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2]
    assert shift_requantize(np.array([3]), -2, -100, 100).tolist() == [12]


def test_act_matches_table_of_codes(bundle_factory):
    bundle = load_bundle(bundle_factory())
    pol = IntegerPolicy(bundle)
    obs = np.random.default_rng(0).normal(size=bundle.obs_dim)
    q_out = pol.codes(pol.quantize(obs)[None])[0]
    action = pol.act(obs)
    lo = bundle.layers[-1].out_range[0]
    assert action.tolist() == [float(bundle.action_table[j, q - lo]) for j, q in enumerate(q_out)]
    assert np.all(np.abs(action) <= 1.0)


@pytest.mark.parametrize("spec", [QuantSpec(6, 2, 8, 16, 2, "float"), QuantSpec(8, 8, 8, 32, 2, "float"),
                                  QuantSpec(4, 3, 8, 64, 2, "po2"), QuantSpec(3, 2, 4, 16, 3, "float")],
                         ids=lambda s: f"w{s.width}c{s.core_bits}i{s.input_bits}o{s.output_bits}{s.scale_mode}")
def test_the_one_observation_act_path_equals_the_reference_path(bundle_factory, spec):
    """act() (one call, searchsorted over shifted thresholds, a float64 core) == decode(codes(quantize()))."""
    policy = IntegerPolicy(load_bundle(bundle_factory(spec)))
    norm = policy.bundle.normalization
    rng = np.random.default_rng(4)
    scale = rng.choice([0.1, 1.0, 3.0, 50.0], size=(3000, 1))
    obs = np.asarray(norm["mean"]) + rng.standard_normal((3000, policy.obs_dim)) * scale * np.sqrt(norm["var"])
    from qpolicy_hw.host_float import check_observation, normalize_observation, quantize_input

    # the contract's host functions, step by step (independent of the runtime's one-call paths)
    mean, var = np.asarray(norm["mean"]), np.asarray(norm["var"])
    codes = np.array([quantize_input(normalize_observation(check_observation(o, policy.obs_dim), mean,
                                                           var, norm["clip"], norm["epsilon"]),
                                     policy.bundle.input_scale, policy.bundle.bits["input"]) for o in obs])
    assert np.array_equal(np.array([policy.quantize(o) for o in obs]), codes)
    reference = np.array([policy.decode(q) for q in policy.codes(codes)])
    assert np.array_equal(np.array([policy.act(o) for o in obs]), reference)
    with pytest.raises(ObservationError, match="NaN or Inf"):
        policy.act([np.nan] * policy.obs_dim)
    with pytest.raises(ObservationError, match="shape"):
        policy.act([0.0] * (policy.obs_dim + 1))
