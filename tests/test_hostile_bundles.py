"""A bundle is data, never code: a corpus of crafted bundles is refused in one line, fast and in bounded
memory, or is provably harmless (the same actions as the original); none runs code."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile_corpus import CASES, build_corpus

ROOT = Path(__file__).resolve().parent.parent
HARMLESS = {"provenance_strings"}   # provenance is recorded, never used: it must load and act as the original


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from qpolicy_train.quant_actor import QuantSpec
    from tests.conftest import make_bundle

    root = tmp_path_factory.mktemp("hostile")
    base = make_bundle(root, QuantSpec(6, 2, 8, 16, 2, "float"), 0, "base")
    marker = root / "MARKER"
    build_corpus(base, root / "corpus", marker)
    out = subprocess.run([sys.executable, "-m", "tests.hostile_corpus", str(root / "corpus"), str(base)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(root), "QPOLICY_CACHE": str(root / "cache")})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return {row["case"]: row for row in lines[:-1]}, lines[-1]["peak_rss_mb"], marker


def test_the_corpus_has_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_hostile_bundle_is_refused_in_one_line_fast_or_is_harmless(corpus, case):
    rows, _, marker = corpus
    row = rows[case]
    if case in HARMLESS:
        assert row["refused"] is None and row["same_actions"], row
    else:
        assert row["refused"] is not None, f"{case} was accepted: {row}"
        assert row["refused"].startswith("BundleError"), row
        assert "\n" not in row["refused"] and len(row["refused"]) < 400
    assert row["seconds"] < 2.0, row
    assert not marker.exists()


def test_the_whole_corpus_stays_under_500_mb(corpus):
    _, peak_rss_mb, marker = corpus
    print(f"peak RSS over {len(CASES)} hostile bundles: {peak_rss_mb:.0f} MB")
    assert peak_rss_mb < 500 and not marker.exists()


@pytest.mark.parametrize("case", ["env_id_c_constructor", "env_id_module_import"])
def test_qpolicy_eval_of_an_injecting_bundle_runs_nothing(corpus, case, tmp_path):
    rows, _, marker = corpus
    case_dir = marker.parent / "corpus" / case
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from qpolicy_cli.main import main; rc = main(sys.argv[1:]); "
                          "print('this' in sys.modules); sys.exit(rc)", "eval", str(case_dir), "--episodes", "1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stdout.strip() == "False", out.stdout   # `this` was never imported
    assert len(out.stderr.strip().splitlines()) == 1 and "not a Gymnasium id" in out.stderr
    assert "Zen of Python" not in out.stdout and not marker.exists()
