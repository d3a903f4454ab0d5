"""The AXI-Lite wrapper: generation, the register-level driver, and a Verilated MMIO for tests.

``PolicyCoreDriver`` talks to anything shaped like ``pynq.MMIO`` (``read(offset)``, ``write(offset,
value)``): the real overlay on a board, or :class:`VerilatedMMIO`, whose register reads and writes
really go through the simulated AXI-Lite slave.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np

from qpolicy_hw.bundle import signed_range
from qpolicy_hw.errors import BackendUnavailable, CoreFault, QpolicyError
from qpolicy_hw.register_map import (
    ADDR_BITS,
    CORE_ID,
    CTRL_DONE,
    CTRL_START,
    axi_verilog,
    bundle_hash,
    c_header,
    layout,
)

DONE_TIMEOUT_S = 0.01
"""How long one inference may take from START to DONE (the slowest core here needs ~6 us at 100 MHz)."""


class PolicyCoreDriver:
    """Register-level driver of one qpolicy core (numpy only; runs on the board).

    With ``digest``, a core built from another bundle (``BUNDLE_HASH`` differs) is refused: a stale
    overlay never serves a new policy."""

    def __init__(self, mmio, n_in: int, n_out: int, in_bits: int, out_bits: int, digest: str | None = None,
                 done_timeout_s: float = DONE_TIMEOUT_S):
        self.mmio, self.n_in, self.n_out = mmio, n_in, n_out
        self.in_mask = (1 << in_bits) - 1
        self.out_lo, self.out_hi = signed_range(out_bits)
        self.done_timeout_s = done_timeout_s
        self.regs = layout(n_in, n_out)
        core_id = self.mmio.read(self.regs["ID"])
        if core_id != CORE_ID:
            raise BackendUnavailable(f"no qpolicy core at this address (ID reads 0x{core_id:08X})")
        if (self.mmio.read(self.regs["N_IN"]), self.mmio.read(self.regs["N_OUT"])) != (n_in, n_out):
            raise BackendUnavailable("the overlay's core has other input/output sizes than the bundle")
        if digest is not None:
            built_for = self.mmio.read(self.regs["BUNDLE_HASH"])
            if built_for != bundle_hash(digest):
                raise BackendUnavailable(f"the overlay's core was built for bundle {built_for:08x}..., this bundle is "
                                         f"{digest[:8]}...: rebuild the overlay with qpolicy hw")
        self.latency = self.mmio.read(self.regs["LATENCY"])
        # The slave and the core share one clock, and a register read takes at least one cycle of it: after
        # LATENCY + 2 reads without DONE the core has had all its cycles. A wall-clock bound alone would also
        # fault a working core whose host was preempted, or a simulator on a loaded machine.
        self.min_polls = min(self.latency, 1 << 16) + 2
        self.last_cycles: int | None = None

    def infer(self, q_in) -> np.ndarray:
        """Output codes for one vector of input codes; :class:`CoreFault` when the core does not answer within
        ``done_timeout_s`` and its LATENCY in polls, or answers a code outside the output range."""
        for i, v in enumerate(np.asarray(q_in, dtype=np.int64)):
            self.mmio.write(self.regs[f"IN{i}"], int(v) & self.in_mask)
        self.mmio.write(self.regs["CTRL"], CTRL_START)
        deadline = time.perf_counter() + self.done_timeout_s
        polls = 0
        while not self.mmio.read(self.regs["CTRL"]) & CTRL_DONE:
            polls += 1
            if polls >= self.min_polls and time.perf_counter() > deadline:
                raise CoreFault(f"the core did not signal DONE within {self.done_timeout_s * 1e3:g} ms")
        out = [self.mmio.read(self.regs[f"OUT{j}"]) for j in range(self.n_out)]
        self.last_cycles = self.mmio.read(self.regs["CYCLES"])
        codes = np.array([v - (1 << 32) if v & 0x80000000 else v for v in out], dtype=np.int64)
        if codes.min() < self.out_lo or codes.max() > self.out_hi:
            raise CoreFault(f"the core answered codes {codes.tolist()} outside [{self.out_lo}, {self.out_hi}]")
        return codes


AXI_TB = r"""// Verilator testbench: AXI4-Lite transactions from stdin ("w ADDR DATA" / "r ADDR"), results on stdout.
#include <cstdio>
#include <cstdint>
#include "Vqpolicy_axi.h"
#include "verilated.h"
static Vqpolicy_axi* top;
static void tick() { top->s_axi_aclk = 1; top->eval(); top->s_axi_aclk = 0; top->eval(); }
int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    top = new Vqpolicy_axi;
    top->s_axi_aresetn = 0; top->s_axi_bready = 1; top->s_axi_rready = 1; top->s_axi_wstrb = 0xF;
    for (int i = 0; i < 4; ++i) tick();
    top->s_axi_aresetn = 1; tick();
    char op; unsigned addr, data;
    while (scanf(" %c", &op) == 1) {
        if (op == 'w' && scanf("%x %x", &addr, &data) == 2) {
            top->s_axi_awaddr = addr; top->s_axi_wdata = data; top->s_axi_awvalid = 1; top->s_axi_wvalid = 1;
            int n = 0; do { tick(); } while (!top->s_axi_bvalid && ++n < 1000);
            top->s_axi_awvalid = 0; top->s_axi_wvalid = 0; tick();
            printf("ok\n");
        } else if (op == 'r' && scanf("%x", &addr) == 1) {
            top->s_axi_araddr = addr; top->s_axi_arvalid = 1;
            int n = 0; do { tick(); } while (!top->s_axi_rvalid && ++n < 1000);
            unsigned v = top->s_axi_rdata; top->s_axi_arvalid = 0; tick();
            printf("%u\n", v);
        } else break;
        fflush(stdout);
    }
    delete top;
    return 0;
}
"""


def build_axi(bundle, out_dir: str | Path, latency_cutoff: float | None = None, plan=None,
              stage_levels: int | None = None) -> dict:
    """The RTL core (unrolled, or folded by ``plan``) plus the AXI-Lite slave and the C header, all from the
    one register map."""
    from qpolicy_hw.rtl import DEFAULT_LATENCY_CUTOFF, TOP, build_core

    out = Path(out_dir)
    info = build_core(bundle, out, plan, latency_cutoff or DEFAULT_LATENCY_CUTOFF, stage_levels)
    (out / "src" / "qpolicy_axi.v").write_text(
        axi_verilog(info["n_in"], info["n_out"], info["in_bits"], info["out_bits"], info["latency"], TOP,
                    bundle.digest))
    (out / "qpolicy_core_regs.h").write_text(
        c_header(info["n_in"], info["n_out"], info["in_bits"], info["out_bits"], info["latency"], bundle.digest))
    return info


class VerilatedMMIO:
    """``pynq.MMIO``-shaped access to the Verilated AXI-Lite slave (a persistent simulator process)."""

    def __init__(self, rtl_dir: str | Path):
        from qpolicy_hw.rtl import verilate

        binary = verilate(rtl_dir, "qpolicy_axi", AXI_TB, "verilator_axi")
        self._proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      bufsize=1)
        self.transactions = 0

    def _ask(self, line: str) -> str:
        self._proc.stdin.write(line + "\n")
        answer = self._proc.stdout.readline()
        if not answer:
            raise QpolicyError("the AXI simulator stopped")
        self.transactions += 1
        return answer.strip()

    def read(self, offset: int) -> int:
        return int(self._ask(f"r {offset & ((1 << ADDR_BITS) - 1):x}"))

    def write(self, offset: int, value: int) -> None:
        self._ask(f"w {offset & ((1 << ADDR_BITS) - 1):x} {value & 0xFFFFFFFF:x}")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
