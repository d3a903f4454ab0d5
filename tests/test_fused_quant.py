"""The fused fake-quant training forward against its reference executor, Brevitas: same outputs,
same gradients, bit for bit, and a training run that is byte-identical with or without it."""
from __future__ import annotations

import pytest
import torch

from qpolicy_train.fused_quant import FusedActorForward
from qpolicy_train.quant_actor import QuantSpec

from conftest import calibrated_body

SPECS = [QuantSpec(6, 2, 8, 16, 2, "float"), QuantSpec(8, 8, 8, 64, 2, "float"), QuantSpec(4, 3, 4, 32, 3, "float")]


def _outputs_and_grads(body, forward, x):
    body.zero_grad(set_to_none=True)
    out = forward(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in body.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"w{s.width}c{s.core_bits}i{s.input_bits}o{s.output_bits}")
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_forward_equals_brevitas_bit_for_bit(spec, mode):
    body = calibrated_body(spec, seed=1)
    body.train(mode == "train")
    fused = FusedActorForward(body)
    gen = torch.Generator().manual_seed(2)
    # moderate inputs, inputs far outside every clamp range, and exact zeros
    x = torch.cat([torch.randn(256, 11, generator=gen), torch.randn(64, 11, generator=gen) * 50, torch.zeros(4, 11)])
    ref_out, ref_grads = _outputs_and_grads(body, body.brevitas_forward, x)
    out, grads = _outputs_and_grads(body, fused, x)
    assert torch.equal(out, ref_out)
    assert ref_grads.keys() == grads.keys() and len(grads) == len(list(body.parameters()))
    for name in ref_grads:
        assert torch.equal(grads[name], ref_grads[name]), name
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
    from qpolicy_hw.export import qonnx_bytes

    body = calibrated_body(SPECS[0])
    before = qonnx_bytes(body, 11)
    body.train()
    assert body.use_fused_forward(torch.randn(32, 11))
    assert body._fused is not None
    assert qonnx_bytes(body, 11) == before


@pytest.mark.parametrize("algo", ["sac", "ddpg"])
def test_training_with_and_without_fused_forward_is_identical(tmp_path, algo):
    from qpolicy_hw.export import export_checkpoint
    from qpolicy_train.sac import train

    from test_determinism import tiny_args

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
