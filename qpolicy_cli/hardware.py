"""The hardware and trust commands: verify, hw, agent, keygen, sign (argument parsing and output only; the work
is in qpolicy_hw)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from qpolicy_cli.options import add_trust_options, print_json, trust_from
from qpolicy_hw.errors import QpolicyError

EXIT_FAILED_CHECK = 1


def cmd_verify(argv: list[str]) -> int:
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.verify import RUNGS, verify

    p = argparse.ArgumentParser(prog="qpolicy verify",
                                description="Run the verification ladder on a bundle (exit 1 if a rung fails).")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--rung", action="append", choices=sorted(RUNGS), help="run only this rung (repeatable)")
    add_trust_options(p)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    load_bundle(a.bundle, trust=trust_from(a))   # a bundle the trust options refuse is refused before any rung
    result = verify(a.bundle, a.rung,
                    progress=lambda msg: print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True))
    if a.json:
        print_json(result)
    else:
        for name, check in result["checks"].items():
            if check["status"] == "skip":
                print(f"skip {name}: {check['reason']}")
                continue
            detail = ", ".join(f"{k}={v}" for k, v in check.items()
                               if k in ("observations", "vectors", "codes", "mismatches", "rate", "latency_cycles",
                                        "fold"))
            print(f"{check['status']} {name}: {detail}")
        print(f"bundle digest {result['digest']}")
        print(result["verdict"], result["bundle"])
    return 0 if result["pass"] else EXIT_FAILED_CHECK


def cmd_hw(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy hw", description=(
        "Hardware project of a bundle: da4ml RTL core with valid/reset, Verilator check against the int "
        "reference, Yosys xc7 cell counts, Vivado out-of-context TCL, and report.json."))
    p.add_argument("bundle")
    p.add_argument("--target", required=True, help="xc7a15t (the paper's Artix-7) or pynq-z2")
    p.add_argument("--out", required=True)
    p.add_argument("--latency-cutoff", type=float, default=None, help="da4ml delay budget per pipeline stage")
    p.add_argument("--fold", default="auto", help="auto (default: the --objective's choice, within a 10%% margin of "
                   "the part), none (fully unrolled, da4ml) or PExSIMD per layer, e.g. 16x6,u,u (u = unrolled)")
    p.add_argument("--objective", default="auto", choices=["auto", "finn", "area", "latency"], help="finn: the "
                   "fastest core within the resources of the paper's FINN core for the task (Table 3); area: the "
                   "smallest core within --max-latency-us; latency: the fastest core that fits the part; auto "
                   "(default): finn for the paper's five tasks, else area")
    p.add_argument("--max-latency-us", type=float, default=None, help="the area objective's latency budget "
                   "(default: 50 multiply-accumulates per cycle, e.g. 1.2 us for Humanoid)")
    p.add_argument("--clock-mhz", type=float, default=None, help="the clock every core is pipelined for "
                   "(default: the target's, 100 MHz)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from qpolicy_hw.hw_project import build_hw
    from qpolicy_hw.rtl import DEFAULT_LATENCY_CUTOFF

    t0 = time.perf_counter()

    def stage(msg: str) -> None:   # on stderr, so --json output stays one object
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    report = build_hw(a.bundle, a.target, a.out, latency_cutoff=a.latency_cutoff or DEFAULT_LATENCY_CUTOFF,
                      stage=stage, fold=a.fold, objective=a.objective, max_latency_us=a.max_latency_us,
                      clock_mhz=a.clock_mhz)
    if a.json:
        print_json(report)
    else:
        print((Path(a.out) / "REPORT.txt").read_text().rstrip())
    return 0


def cmd_agent(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy agent", description=(
        "Serve a bundle's FPGA core over the network (on the board; numpy and pynq only). Hosts use it with "
        "the remote backend: qpolicy demo --backend remote --remote HOST:PORT."))
    p.add_argument("bundle")
    p.add_argument("--listen", default="127.0.0.1:7450", metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:7450; 0.0.0.0:7450 to accept the robot's computer)")
    p.add_argument("--mmio", default="board", choices=["board", "sim"],
                   help="board: the overlay through pynq; sim: the Verilated AXI-Lite slave (no board needed)")
    p.add_argument("--done-timeout-s", type=float, default=None,
                   help="an inference without DONE after this long is a fault (default: 2 ms; 0.5 s with --mmio sim)")
    p.add_argument("--auth-key", metavar="FILE", help="require hosts to prove they hold this shared key (HMAC)")
    p.add_argument("--max-clients", type=int, default=8, help="connections held at once (default 8)")
    add_trust_options(p)
    a = p.parse_args(argv)
    from qpolicy_hw.agent import Agent, driver_infer, open_core_driver, parse_address, read_shared_key
    from qpolicy_hw.bundle import load_bundle

    host, _ = parse_address(a.listen, listening=True)
    auth_key = read_shared_key(a.auth_key) if a.auth_key else None
    if auth_key is None and not host.startswith("127.") and host != "localhost":
        print(f"qpolicy agent: warning: listening on {host} without --auth-key: any host that reaches the port "
              "can use the core", file=sys.stderr)
    if a.max_clients < 1:
        raise QpolicyError("--max-clients must be at least 1")
    bundle = load_bundle(a.bundle, trust=trust_from(a))
    driver = open_core_driver(bundle, mmio=a.mmio, done_timeout_s=a.done_timeout_s)
    Agent(bundle, driver_infer(driver), log=lambda m: print(m, flush=True), auth_key=auth_key,
          max_clients=a.max_clients).serve_forever(a.listen)
    return 0


def cmd_keygen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy keygen", description="A new Ed25519 key pair for signing bundles.")
    p.add_argument("--out", required=True, metavar="NAME", help="writes NAME.pem (private, mode 600) and NAME.pub.pem")
    a = p.parse_args(argv)
    from qpolicy_hw.trust import generate_key_pair

    kid = generate_key_pair(f"{a.out}.pem", f"{a.out}.pub.pem")
    print(f"key {kid}: private {a.out}.pem (keep it secret), public {a.out}.pub.pem (give it to servers)")
    return 0


def cmd_sign(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy sign", description=(
        "Sign a bundle (its verified digest) with an Ed25519 key: writes BUNDLE/signature.json."))
    p.add_argument("bundle")
    p.add_argument("--signing-key", required=True, metavar="KEY.pem")
    a = p.parse_args(argv)
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.trust import sign_bundle

    bundle = load_bundle(a.bundle)
    print(f"signed {bundle.digest[:16]}...: {sign_bundle(bundle.path, a.signing_key, bundle.digest)}")
    return 0
