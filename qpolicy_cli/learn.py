"""The learning commands: train, export, eval, noise, select, plot, ship (argument parsing and output only;
the work is in qpolicy_train)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from qpolicy_cli.options import add_env_module_option, add_trust_options, print_json, trust_from
from qpolicy_hw.errors import QpolicyError

EXIT_FAILED_CHECK = 1


def cmd_train(argv: list[str]) -> int:
    """qpolicy train [--preset NAME] [ARGS...]: run or resume one SAC/DDPG run."""
    import tyro

    from qpolicy_cli.options import tyro_cli
    from qpolicy_train.args import Args
    from qpolicy_train.presets import load_preset
    from qpolicy_train.training import train

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    default = load_preset(known.preset) if known.preset else Args()
    # the quantized actor's fields keep flat flags (--width, --core-bits, ...)
    args = tyro_cli(tyro.conf.OmitArgPrefixes[Args], default, rest, "qpolicy train",
                    "Train a quantized SAC/DDPG actor. --preset NAME loads config/train/NAME.yaml first.")
    summary = train(args)
    if args.export_bundle:
        from qpolicy_train.export import export_checkpoint

        bundle = export_checkpoint(os.path.join(args.out_dir, "actor.pt"), os.path.join(args.out_dir, "bundle"),
                                   env_module=args.env_module)
        summary["bundle"] = str(bundle)
    print_json({k: v for k, v in summary.items() if k != "history"})
    return 0


def cmd_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy export", description="Export a trained actor to a policy bundle.")
    p.add_argument("checkpoint", help="a training run directory, actor.pt or checkpoint.pt")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--evaluation", help="evaluation JSON to record in the bundle's provenance")
    add_env_module_option(p)
    a = p.parse_args(argv)
    from qpolicy_hw.errors import QpolicyError
    from qpolicy_train.ship import export_safely

    evaluation = None
    if a.evaluation:
        try:
            with open(a.evaluation) as f:
                evaluation = json.load(f)
        except (OSError, ValueError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise QpolicyError(f"cannot read evaluation {a.evaluation}: {exc}") from None
    out = export_safely(a.checkpoint, a.out, evaluation, env_module=a.env_module)
    print(f"wrote bundle {out}")
    return 0


def cmd_eval(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy eval", description="Deterministic rollouts of a bundle.")
    p.add_argument("bundle")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--backend", default="int", choices=["int", "float"])
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the normalized observation")
    p.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the JSON result to this file")
    add_env_module_option(p)
    add_trust_options(p)
    a = p.parse_args(argv)
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.files import writable_file
    from qpolicy_sim.evaluation import evaluate_bundle

    load_bundle(a.bundle, trust=trust_from(a))
    if a.out:
        writable_file(a.out)
    result = evaluate_bundle(a.bundle, a.episodes, a.backend, a.noise, a.seed, env_module=a.env_module)
    if a.out:
        tmp = Path(a.out).with_name(f".{Path(a.out).name}.partial")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, a.out)
    if a.json:
        print_json(result)
    else:
        print(f"{result['env']} {a.backend}: {result['mean_return']:.1f} +- {result['std_return']:.1f} "
              f"over {a.episodes} episodes (noise {a.noise})")
    return 0


def cmd_noise(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy noise",
                                description="Input-noise robustness: returns of bundles vs noise sigma (CSV).")
    p.add_argument("bundles", nargs="+", help="LABEL=BUNDLE or BUNDLE (label = directory name)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="CSV to write (then: qpolicy plot --noise CSV)")
    add_env_module_option(p)
    a = p.parse_args(argv)
    from qpolicy_sim.evaluation import noise_table

    labelled = []
    for item in a.bundles:
        label, _, path = item.rpartition("=")
        labelled.append((label, path))
    for row in noise_table(labelled, a.sigmas, a.episodes, a.seed, a.out, env_module=a.env_module):
        print(f"{row['model']} sigma={row['sigma']}: {row['mean_return']:.1f} +- {row['std_return']:.1f}")
    return 0


def cmd_select(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy select", description=(
        "The paper's staged selection: core bits (I/O at 8) -> width -> input bits. Trains what the "
        "results table lacks (resumable), or only decides with --from-table."))
    from qpolicy_train.args import Args

    defaults = Args()   # the training defaults are defined once, in Args
    p.add_argument("--from-table", help="decide from an existing results CSV; train nothing")
    p.add_argument("--env-id", default=defaults.env_id)
    p.add_argument("--algo", default=defaults.algo, choices=["sac", "ddpg"])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(1000, 1010)))
    p.add_argument("--steps", type=int, default=defaults.total_timesteps, help="training steps per run")
    p.add_argument("--scale-mode", default=defaults.quant.scale_mode, choices=["float", "po2"])
    p.add_argument("--eval-episodes", type=int, default=defaults.eval_episodes)
    p.add_argument("--jobs", type=int, default=None, help="parallel local processes (default: CPU count)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--out", default="sweeps/selection")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from qpolicy_train.selection import read_results, select

    if a.from_table:
        decision = select(read_results(a.from_table))
    else:
        from qpolicy_train.sweep import default_jobs, run_selection

        base = {"env_id": a.env_id, "algo": a.algo, "total_timesteps": a.steps, "scale_mode": a.scale_mode}
        decision = run_selection(base, a.seeds, a.out, a.jobs or default_jobs(), a.engine, a.eval_episodes)
        print("wrote " + ", ".join(str(Path(a.out) / f) for f in ("selection.json", *decision["figures"])),
              file=sys.stderr)
    if a.json:
        print_json(decision)
    else:
        sel = decision["selected"]
        open_stage = next((st for st in decision["stages"] if st["missing"]), None)
        verdict = "selected" if decision["complete"] else \
            f"provisional (stage {open_stage['stage']} lacks {len(open_stage['missing'])} configurations)"
        print(f"FP32 {decision['fp32']['mean']:.1f} +- {decision['fp32']['std']:.1f}; {verdict}: width {sel['width']}, "
              f"core {sel['core_bits']} bits, input {sel['input_bits']} bits, output {sel['output_bits']} bits")
    return 0


def cmd_plot(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy plot", description="Reward-vs-bit-width and noise-robustness figures.")
    p.add_argument("results", nargs="?", help="results CSV of a sweep (reward vs bit width)")
    p.add_argument("--noise", help="noise CSV from `qpolicy noise`")
    p.add_argument("--curves", nargs="+", metavar="LABEL=CSV", help="training logs (progress.csv) to draw as curves")
    p.add_argument("--reference", type=float, help="a horizontal reference return on the curves figure")
    p.add_argument("--out", default=".", help="directory for the PNG files")
    a = p.parse_args(argv)
    from qpolicy_train.plots import plot_bit_sweep, plot_curves, plot_noise, plot_selection

    if not a.results and not a.noise and not a.curves:
        p.error("give a results CSV, --noise CSV or --curves LABEL=CSV ...")
    curves = {}
    for item in a.curves or []:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            p.error(f"--curves wants LABEL=CSV with an existing file, got {item!r}")
        curves[label] = path
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.results:
        print(f"wrote {plot_bit_sweep(a.results, out / 'reward_vs_bits.png')}")
        try:
            print(f"wrote {plot_selection(a.results, out / 'staged_selection.png')}")
        except QpolicyError as exc:   # a scopes sweep without FP32 runs has no selection to draw
            print(f"no staged-selection figure: {exc}")
    if a.noise:
        print(f"wrote {plot_noise(a.noise, out / 'noise_robustness.png')}")
    if curves:
        try:
            print(f"wrote {plot_curves(curves, out / 'training_curves.png', a.reference)}")
        except (ValueError, KeyError) as exc:
            p.error(f"cannot draw the curves: {exc}")
    return 0


def cmd_ship(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy ship", description=(
        "Package a training run as a shipped policy: the bundle, its training log and the evaluation "
        "that produced its figures (the evaluation is also recorded in the bundle's provenance). --out must be "
        "new, empty, or a previous ship; nothing else is ever deleted."))
    p.add_argument("run", help="training run directory (actor.pt or checkpoint.pt)")
    p.add_argument("--out", required=True, help="e.g. policies/hopper/selected")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--signing-key", metavar="KEY.pem", help="sign the bundle with this Ed25519 key (qpolicy keygen)")
    add_env_module_option(p)
    a = p.parse_args(argv)
    from qpolicy_train.ship import ship

    evaluation = ship(a.run, a.out, a.episodes, a.seed, a.signing_key, env_module=a.env_module)
    print(f"shipped {a.out}: {evaluation['mean_return']:.1f} +- {evaluation['std_return']:.1f} over "
          f"{a.episodes} episodes ({evaluation['backend']} backend)" + (", signed" if a.signing_key else ""))
    return 0
