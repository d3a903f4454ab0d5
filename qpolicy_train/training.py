"""``train(args)``: the run of ``args.algo`` (SAC or DDPG), started or resumed."""
from __future__ import annotations

from qpolicy_train.args import Args


def train(args: Args) -> dict:
    """Run (or resume) one training run; returns a summary with the final evaluation."""
    if args.algo == "ddpg":
        from qpolicy_train.ddpg import train_ddpg

        return train_ddpg(args)
    from qpolicy_train.sac import train_sac

    return train_sac(args)
