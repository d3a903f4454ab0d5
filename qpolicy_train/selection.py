"""The paper's staged model selection, driven by one results table.

1. core bits: the smallest core bit width whose policies match FP32, with input/output at 8 bits
   and width 256;
2. width: then the smallest hidden width from {256, 128, 64, 32, 16} that still matches;
3. input bits: then the smallest input bit width that still matches (output stays at 8 bits).

"Matches FP32" is the paper's parity rule: the mean over seeds of the per-seed mean return is at
least the FP32 mean minus the FP32 standard deviation (both over seeds).
"""
from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpolicy_hw.errors import QpolicyError

WIDTHS = (256, 128, 64, 32, 16)
BITS = (8, 7, 6, 5, 4, 3, 2)
RESULT_FIELDS = ("env_id", "algo", "quantized", "width", "input_bits", "core_bits", "output_bits", "seed",
                 "steps", "mean_return", "std_return", "episodes", "run_dir")


@dataclass(frozen=True)
class Config:
    width: int = 256
    input_bits: int = 8
    core_bits: int = 8
    output_bits: int = 8
    quantized: bool = True

    def key(self) -> tuple:
        return (self.quantized, self.width, self.input_bits, self.core_bits, self.output_bits)


FP32 = Config(quantized=False)


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results table (CSV with :data:`RESULT_FIELDS`), numbers parsed."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise QpolicyError(f"cannot read results table {path}: {exc.strerror}") from None
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            out.append({**r, "quantized": str(r["quantized"]).lower() in ("1", "true", "yes"),
                        "width": int(r["width"]), "input_bits": int(r["input_bits"]),
                        "core_bits": int(r["core_bits"]), "output_bits": int(r["output_bits"]),
                        "seed": int(r["seed"]), "mean_return": float(r["mean_return"])})
        except (KeyError, ValueError) as exc:
            raise QpolicyError(f"{path}:{i}: malformed row ({exc})") from None
    return out


def append_result(path: str | Path, row: dict) -> None:
    path = Path(path)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def config_of(row: dict) -> Config:
    if not row["quantized"]:
        return Config(width=row["width"], quantized=False)
    return Config(row["width"], row["input_bits"], row["core_bits"], row["output_bits"])


def summarize(rows: Iterable[dict]) -> dict[Config, tuple[float, float, int]]:
    """Per configuration: (mean over seeds, std over seeds, number of seeds) of the per-seed mean return."""
    per: dict[Config, list[float]] = {}
    for r in rows:
        per.setdefault(config_of(r), []).append(r["mean_return"])
    return {c: (float(np.mean(v)), float(np.std(v)), len(v)) for c, v in per.items()}


def matches_fp32(mean: float, fp32_mean: float, fp32_std: float) -> bool:
    """The paper's parity rule: within FP32 mean +- 1 std, which in practice means mean >= FP32 - std."""
    return mean >= fp32_mean - fp32_std


def stage_candidates(stage: int, chosen: dict) -> list[Config]:
    """The configurations a stage compares, given the choices of the earlier stages."""
    if stage == 1:
        return [Config(256, 8, b, 8) for b in BITS]
    if stage == 2:
        return [Config(w, 8, chosen["core_bits"], 8) for w in WIDTHS]
    if stage == 3:
        return [Config(chosen["width"], b, chosen["core_bits"], 8) for b in BITS]
    raise ValueError(stage)


def select(rows: list[dict]) -> dict:
    """Run the three stages on a results table; returns the choice and each stage's evidence.

    A stage whose candidates are not all in the table (a sweep still running) decides from the ones
    that are, says which runs are needed (``missing``) and is ``complete: False``, and so are the stages
    after it: their choices are provisional, and so is the decision (``complete``). A stage where nothing
    matches keeps the previous setting.
    """
    table = summarize(rows)
    fp32 = [v for c, v in table.items() if not c.quantized]
    if not fp32:
        raise QpolicyError("the results table has no FP32 (quantized=false) runs to compare against")
    fp32_mean, fp32_std, _ = max(fp32, key=lambda v: v[2])
    chosen = {"core_bits": 8, "width": 256, "input_bits": 8, "output_bits": 8}
    stages = []
    complete = True
    for stage, field, _order in ((1, "core_bits", BITS), (2, "width", WIDTHS), (3, "input_bits", BITS)):
        cands = stage_candidates(stage, chosen)
        present = [c for c in cands if c in table]
        missing = [c for c in cands if c not in table]
        evidence = [{"config": c.__dict__, "mean": table[c][0], "std": table[c][1], "seeds": table[c][2],
                     "matches_fp32": matches_fp32(table[c][0], fp32_mean, fp32_std)} for c in present]
        ok = [c for c in present if matches_fp32(table[c][0], fp32_mean, fp32_std)]
        if ok:
            # smallest bit width / width that matches
            chosen[field] = min(getattr(c, field) for c in ok)
        complete = complete and not missing
        stages.append({"stage": stage, "field": field, "chosen": chosen[field], "evidence": evidence,
                       "missing": [c.__dict__ for c in missing], "complete": complete})
    return {"fp32": {"mean": fp32_mean, "std": fp32_std}, "selected": chosen, "stages": stages,
            "complete": complete}
