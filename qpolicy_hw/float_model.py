"""The float reference: the bundle's actor rebuilt in Brevitas/torch from ``float_state.npz``.

It serves the ``float`` backend and the float rungs of the verification ladder. It needs torch
and brevitas; the integer runtimes never import it.
"""
from __future__ import annotations

import numpy as np
import torch

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.errors import BackendUnavailable, BundleError
from qpolicy_train.quant_actor import QuantSpec, SquashedAction, make_actor_body


def rebuild_actor(bundle: Bundle) -> tuple[torch.nn.Module, SquashedAction]:
    """The actor body (eval mode) and its squash, exactly as trained."""
    if bundle.float_state is None:
        raise BackendUnavailable(f"{bundle.path}: the bundle carries no float_state.npz")
    spec = QuantSpec(**bundle.meta["spec"])
    body = make_actor_body(bundle.obs_dim, bundle.act_dim, spec)
    state = {k: torch.from_numpy(np.array(v)) for k, v in bundle.float_state.items()}
    try:
        body.load_state_dict(state)
    except RuntimeError as exc:
        raise BundleError(f"{bundle.path}: float_state.npz does not match the actor ({str(exc)[:160]})") from None
    body.eval()
    task = bundle.meta["task"]
    return body, SquashedAction(np.asarray(task["action_low"]), np.asarray(task["action_high"]))
