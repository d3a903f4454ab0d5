"""What a run writes as it goes: ``progress.csv`` (one row per episode and per evaluation), TensorBoard
scalars and the progress bar. A context manager; a resumed run keeps the rows up to its checkpoint."""
from __future__ import annotations

import csv
from pathlib import Path

from qpolicy_train.args import Args

HEADER = ["global_step", "episode", "episodic_return", "eval_mean", "eval_std", "alpha", "sps"]


class RunLog:
    def __init__(self, out: Path, args: Args, start_step: int):
        csv_path = out / "progress.csv"
        rows: list[list[str]] = []
        if start_step and csv_path.exists():
            with open(csv_path, newline="") as f:
                rows = list(csv.reader(f))
        self._file = open(csv_path, "w", newline="")
        self._csv = csv.writer(self._file)
        # a resumed run keeps the rows up to its checkpoint and drops what was logged after it
        self._csv.writerows(rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= start_step] if rows else [HEADER])
        self._file.flush()
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(out / "tb"), purge_step=start_step or None)
        except ImportError:  # tensorboard is in the pinned environment; this only guards partial installs
            self._tb = None
        self._bar = None
        if args.progress:
            from tqdm import tqdm
            self._bar = tqdm(total=args.total_timesteps, initial=start_step, unit="step", dynamic_ncols=True,
                             desc=f"{args.algo} {args.env_id}")

    def episode(self, step: int, episode: int, episodic_return: float, alpha: float) -> None:
        self._csv.writerow([step, episode, episodic_return, "", "", alpha, ""])
        if self._tb:
            self._tb.add_scalar("charts/episodic_return", episodic_return, step)

    def evaluation(self, step: int, episode: int, mean: float, std: float, alpha: float, sps: float,
                   last_return: float) -> None:
        self._csv.writerow([step, episode, "", mean, std, alpha, sps])
        self._file.flush()
        if self._tb:
            self._tb.add_scalar("eval/mean_return", mean, step)
            self._tb.add_scalar("charts/SPS", sps, step)
        if self._bar:
            self._bar.set_postfix(eval=f"{mean:.0f}", last=f"{last_return:.0f}", sps=f"{sps:.0f}")

    def note(self, text: str) -> None:
        """A line for the user, above the progress bar."""
        if self._bar:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def advance(self) -> None:
        if self._bar:
            self._bar.update(1)

    def flush(self) -> None:
        self._file.flush()

    def close_bar(self) -> None:
        if self._bar:
            self._bar.close()
            self._bar = None

    def close(self, tensorboard: bool = True) -> None:
        """Close the files. After Ctrl-C, ``tensorboard=False``: the interrupt may have landed inside the event
        writer's queue, and joining its thread could then wait forever; the process's exit flushes it."""
        self.close_bar()
        if not self._file.closed:
            self._file.close()
        if self._tb and tensorboard:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
