"""The fused fake-quant training forward against its reference executor, Brevitas: same outputs,
same gradients, bit for bit, and a training run that is byte-identical with or without it."""
from __future__ import annotations

import pytest
import torch
from conftest import calibrated_body

from qpolicy_train import fakequant_kernel
from qpolicy_train.fused_quant import FusedActorForward
from qpolicy_train.quant_actor import QuantSpec

SPECS = [QuantSpec(6, 2, 8, 16, 2, "float"), QuantSpec(8, 8, 8, 64, 2, "float"), QuantSpec(4, 3, 4, 32, 3, "float")]


def _outputs_and_grads(body, forward, x):
    body.zero_grad(set_to_none=True)
    out = forward(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in body.named_parameters() if p.grad is not None}


@pytest.fixture(params=["whole_body", "per_quantizer", "torch_ops"])
def kernel_path(request, monkeypatch):
    """Run a test through each way the fused forward can go: the whole body as one autograd node (C loops),
    one node per quantizer (C loops), and the torch-op fallback used without a C compiler."""
    if request.param == "torch_ops":
        monkeypatch.setattr(fakequant_kernel, "usable", lambda *a: False)
    else:
        assert fakequant_kernel.kernels() is not None, fakequant_kernel.unavailable_reason()
    if request.param == "per_quantizer":
        monkeypatch.setattr(FusedActorForward, "_whole_body_plan", lambda self, x: None)
    return request.param


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int32), b.view(torch.int32))   # NaN payloads and -0.0 included


def _quant_reference(x, s, lo, hi, passes, g):
    """The torch ops the C loops replace (the pre-kernel _FakeQuant), for one tensor."""
    z = x / s
    r = torch.round(z)
    c = torch.clamp(r, lo, hi)
    g_c = g * s
    g_s = (g * c).sum()
    if not passes:
        g_c = torch.where((r > hi) | (r < lo), 0.0, g_c)
    return c * s, g_c / s, g_s + -(g_c * (z / s)).sum()


@pytest.mark.parametrize("lo,hi,passes", [(-128.0, 127.0, True), (0.0, 3.0, False), (-2.0, 1.0, False)])
def test_c_loops_equal_the_torch_ops_bit_for_bit(lo, hi, passes):
    assert fakequant_kernel.kernels() is not None, fakequant_kernel.unavailable_reason()
    gen = torch.Generator().manual_seed(5)
    s = torch.tensor(0.37)
    special = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 0.0, -0.0, float("inf"), float("-inf"), float("nan")]) * s
    x = torch.cat([torch.randn(20_000, generator=gen) * 3, torch.randn(2_000, generator=gen) * 100, special])
    g = torch.randn(x.shape, generator=gen)
    out_ref, gx_ref, _ = _quant_reference(x, s, lo, hi, passes, g)
    gx, _, _ = fakequant_kernel.backward(g, x, float(s), lo, hi, passes)
    assert _same_bits(fakequant_kernel.forward(x, float(s), lo, hi), out_ref)
    assert _same_bits(gx, gx_ref)
    finite = torch.isfinite(x)   # the scale gradient is a sum: compare it where it is a number
    _, _, gs_finite = _quant_reference(x[finite], s, lo, hi, passes, g[finite])
    _, p1_f, p2_f = fakequant_kernel.backward(g[finite].contiguous(), x[finite].contiguous(), float(s), lo, hi, passes)
    assert _same_bits(p1_f.sum() + -p2_f.sum(), gs_finite)
    assert (x[finite] / s).round().clamp(lo, hi).eq(lo).any() and (x / s).round().clamp(lo, hi).eq(hi).any()


def test_abs_max_gradient_equals_autograd_with_ties_and_zeros():
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(64, 32, generator=gen)
    w[0, 0], w[5, 7], w[9, 9] = 4.0, -4.0, 4.0          # three maxima of |w|
    w[1, :4] = torch.tensor([0.0, -0.0, 0.0, -0.0])
    g_other = torch.randn(64, 32, generator=gen)
    g_other[2, :3] = torch.tensor([-0.0, 0.0, -0.0])     # signed zeros the added path must keep or flip as torch does
    g_v = torch.tensor(0.731)
    leaf = w.clone().requires_grad_(True)
    v = torch.max(torch.abs(leaf.reshape(-1))).view(())
    (g_ref,) = torch.autograd.grad([leaf, v], [leaf], [g_other, g_v])   # the two paths, summed by autograd
    g_w = g_other.clone()
    fakequant_kernel.add_abs_max_grad(g_w, w, v.detach(), g_v)
    assert _same_bits(g_w, g_ref)
    assert (g_w != g_other).sum() == 3


def test_without_a_compiler_the_loops_step_aside(monkeypatch):
    monkeypatch.setattr(fakequant_kernel, "_lib", None)
    monkeypatch.setattr(fakequant_kernel, "_load_error", None)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert fakequant_kernel.kernels() is None
    assert "nonexistent" in fakequant_kernel.unavailable_reason()
    assert not fakequant_kernel.usable(torch.zeros(4))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"w{s.width}c{s.core_bits}i{s.input_bits}o{s.output_bits}")
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_forward_equals_brevitas_bit_for_bit(spec, mode, kernel_path):
    body = calibrated_body(spec, seed=1)
    body.train(mode == "train")
    fused = FusedActorForward(body)
    gen = torch.Generator().manual_seed(2)
    # moderate inputs, inputs far outside every clamp range, and exact zeros
    x = torch.cat([torch.randn(256, 11, generator=gen), torch.randn(64, 11, generator=gen) * 50, torch.zeros(4, 11)])
    ref_out, ref_grads = _outputs_and_grads(body, body.brevitas_forward, x)
    out, grads = _outputs_and_grads(body, fused, x)
    assert _same_bits(out, ref_out)
    assert ref_grads.keys() == grads.keys() and len(grads) == len(list(body.parameters()))
    for name in ref_grads:
        assert _same_bits(grads[name], ref_grads[name]), name   # signed zeros too
    # the saturating inputs really exercised the clamps (their gradients are masked)
    assert (ref_out.abs() == ref_out.abs().max()).any()
    with torch.no_grad():   # acting and critic targets take the autograd-free path
        assert torch.equal(fused(x), body.brevitas_forward(x))


def test_switching_needs_a_finished_warmup_and_float_scales():
    from qpolicy_train.quant_actor import make_actor_body

    fresh = make_actor_body(11, 3, SPECS[0])
    with pytest.raises(ValueError, match="warm-up"):
        fresh.use_fused_forward(torch.zeros(4, 11))
    po2 = calibrated_body(QuantSpec(6, 2, 8, 16, 2, "po2"))
    with pytest.raises(ValueError, match="float scale mode"):
        po2.use_fused_forward(torch.zeros(4, 11))


def test_export_traces_brevitas_not_the_fused_forward(tmp_path):
    from qpolicy_train.export import qonnx_bytes

    body = calibrated_body(SPECS[0])
    before = qonnx_bytes(body, 11)
    body.train()
    assert body.use_fused_forward(torch.randn(32, 11))
    assert body._fused is not None
    assert qonnx_bytes(body, 11) == before


@pytest.mark.parametrize("algo", ["sac", "ddpg"])
def test_training_with_and_without_fused_forward_is_identical(tmp_path, algo):
    from test_determinism import tiny_args

    from qpolicy_train.export import export_checkpoint
    from qpolicy_train.training import train

    results = {}
    for fused in (True, False):
        args = tiny_args(tmp_path / str(fused), algo)
        args.fused_quant = fused
        summary = train(args)
        bundle = export_checkpoint(tmp_path / str(fused) / "actor.pt", tmp_path / str(fused) / "bundle")
        results[fused] = (summary, bundle)
    (s1, b1), (s2, b2) = results[True], results[False]
    assert [h["eval_mean"] for h in s1["history"]] == [h["eval_mean"] for h in s2["history"]]
    assert s1["fused_since_step"] is not None and s2["fused_since_step"] is None   # the fused run did switch
    for name in ("arrays.npz", "float_state.npz", "model.onnx"):
        assert (b1 / name).read_bytes() == (b2 / name).read_bytes(), name
