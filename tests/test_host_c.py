"""The generated C library (host steps, the core in software, act) against the int reference, with gcc."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.host_c import write_host_library
from qpolicy_hw.runtime.int_backend import IntegerPolicy

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")

MAIN = r"""
#include <stdio.h>
#include "qpolicy_host.h"
int main(void) {
    double obs[QPOLICY_OBS_DIM], action[QPOLICY_ACT_DIM], whole[QPOLICY_ACT_DIM];
    int32_t q_in[QPOLICY_OBS_DIM], q_out[QPOLICY_ACT_DIM], q_sw[QPOLICY_ACT_DIM];
    for (;;) {
        for (int i = 0; i < QPOLICY_OBS_DIM; ++i) if (scanf("%lf", &obs[i]) != 1) return 0;
        for (int j = 0; j < QPOLICY_ACT_DIM; ++j) if (scanf("%d", &q_out[j]) != 1) return 0;
        int rq = qpolicy_quantize(obs, q_in), rd = qpolicy_decode(q_out, action);
        int rc = rq == 0 ? qpolicy_core_sw(q_in, q_sw) : -9, ra = qpolicy_act(obs, whole);
        printf("%d %d %d %d", rq, rd, rc, ra);
        for (int i = 0; i < QPOLICY_OBS_DIM; ++i) printf(" %d", q_in[i]);
        for (int j = 0; j < QPOLICY_ACT_DIM; ++j) printf(" %.17g", action[j]);
        for (int j = 0; j < QPOLICY_ACT_DIM; ++j) printf(" %d", q_sw[j]);
        for (int j = 0; j < QPOLICY_ACT_DIM; ++j) printf(" %.17g", whole[j]);
        printf("\n");
    }
}
"""


def _raw(bundle, n, seed):
    obs = bundle.random_observations(n, seed)
    obs[:5] = np.array([1e300, -1e300, 0.0, 1e-300, -7.5])[:, None]   # far beyond the clip, and zeros
    return obs


@pytest.mark.parametrize("which", ["fixture", "policies/hopper/selected", "policies/walker2d/selected"])
def test_c_host_library_matches_the_int_reference(bundle_factory, tmp_path, which):
    path = bundle_factory() if which == "fixture" else which
    bundle = load_bundle(path)
    host = write_host_library(bundle, tmp_path, latency=5)
    (host / "main.c").write_text(MAIN)
    exe = tmp_path / "host_test"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Werror", "-o", str(exe), str(host / "qpolicy_host.c"),
                    str(host / "qpolicy_core_sw.c"), str(host / "main.c"), "-lm"], check=True, capture_output=True, text=True)
    ref = IntegerPolicy(bundle)
    obs = np.vstack([np.load(bundle.path / "golden" / "obs.npy"), _raw(bundle, 3000, 7)])
    q_in = np.array([ref.quantize(o) for o in obs])
    q_out = ref.codes(q_in)
    lines = "\n".join(" ".join(repr(float(v)) for v in o) + " " + " ".join(str(int(c)) for c in q)
                      for o, q in zip(obs, q_out, strict=True))
    out = subprocess.run([str(exe)], input=lines + "\n", capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()]
    assert len(rows) == len(obs) and all(r[:4] == ["0", "0", "0", "0"] for r in rows)
    d, m = bundle.obs_dim, bundle.act_dim
    c_codes = np.array([[int(v) for v in r[4:4 + d]] for r in rows])
    c_actions = np.array([[float(v) for v in r[4 + d:4 + d + m]] for r in rows])
    c_core = np.array([[int(v) for v in r[4 + d + m:4 + d + 2 * m]] for r in rows])
    c_whole = np.array([[float(v) for v in r[4 + d + 2 * m:]] for r in rows])
    assert int((c_codes != q_in).sum()) == 0                           # every input code
    assert np.array_equal(c_actions, np.array([ref.decode(q) for q in q_out]))   # every action, bit for bit
    assert int((c_core != q_out).sum()) == 0                           # the core in software: every output code
    assert np.array_equal(c_whole, np.array([ref.act(o) for o in obs]))          # and act, in one call
    # a NaN observation and an out-of-range output code are refused
    bad = " ".join(["nan"] + ["0"] * (d - 1)) + " " + " ".join(["999"] * bundle.act_dim)
    out = subprocess.run([str(exe)], input=bad + "\n", capture_output=True, text=True, check=True)
    assert out.stdout.split()[:4] == ["-1", "-1", "-9", "-1"]
    header = (host / "qpolicy_host.h").read_text()
    assert bundle.digest in header and "QPOLICY_BUNDLE_HASH" in (host / "qpolicy_core_regs.h").read_text()
