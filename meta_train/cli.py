"""`python -m meta_train`: meta-train a policy initialization with MAML, or evaluate one.

    python -m meta_train [train] --config meta_train/configs/halfcheetah-dir.yaml --out DIR
        [--meta-optimizer vpg|trpo|ppo|reptile] [--adapt-steps N] [--iterations N] [--joint]
        [--resume] [--set key=value ...]
    python -m meta_train oracle --config meta_train/configs/halfcheetah-dir-repro.yaml --out DIR
        [--iterations 500] [--meta-batch 5] [--eval-trajectories 40]
    python -m meta_train evaluate --checkpoint DIR/checkpoint.pt [--tasks 40] [--adapt-steps 3]
        [--pretrained JOINT/checkpoint.pt] [--trajectories K] [--inner-lr 0.1,0.05]
        [--prefix FILE] [--levels SET]

`--config` takes a YAML path or the name of a shipped config (`halfcheetah-dir`).
Configs: halfcheetah-*.yaml (MuJoCo sanity tasks), atari-train.yaml (ROM-free game levels as
tasks), sonic-train.yaml (the contest's training levels; needs the Sonic ROMs).

Training writes DIR/checkpoint.pt (every iteration, atomically), DIR/metrics.csv, DIR/tb/
(TensorBoard) and DIR/config.yaml. `--joint` trains the same policy without adaptation (0 inner
steps: plain policy gradient on the task mixture), the "pretrained" baseline of Finn's table.
`--resume` continues DIR's run from its checkpoint, with its own config (plus this call's
--set/--iterations), exactly as a straight run would have gone on. With `--config` too, the
file must give the run's settings: one that differs from the run's, and that no --set of this
call names, is a one-line error (where and how it runs, e.g. workers or device, may change).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import add_device_option, apply_overrides, load_config, parse_device
from meta_train.configs import DEFAULTS, META_OPTIMIZERS, resume_conflicts
from roms_setup.commands import command_parser, parse_command
from sonic_common.errors import UserError, exit_on_user_error


def parse_train(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m meta_train", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        help="YAML with the keys to change from the defaults (meta_train.configs."
        "MetaTrainConfig), or "
        "a shipped config's name (e.g. halfcheetah-dir)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--meta-optimizer", choices=META_OPTIMIZERS)
    p.add_argument("--adapt-steps", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument(
        "--joint",
        action="store_true",
        help="train without adaptation on the task mixture (pretrained baseline)",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="rollouts here (default) or on a Ray cluster, one sampler per node",
    )
    p.add_argument(
        "--address",
        help="ray: the cluster to join (auto, HOST:6379; default "
        "$RAY_ADDRESS, else a one-node Ray here)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_option(p)
    return p.parse_args(argv)


def parse_evaluate(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m meta_train evaluate",
        description="returns after 0..N adaptation steps on fresh tasks",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--adapt-steps", type=int, default=3)
    p.add_argument("--trajectories", type=int, help="per task per step (default: training's)")
    p.add_argument("--pretrained", help="a checkpoint trained with --joint, shown beside")
    p.add_argument(
        "--inner-lr",
        help="step sizes per step, e.g. 0.1,0.05 (Finn's test schedule; "
        "the last repeats); default: the checkpoint's α",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument(
        "--prefix",
        "--out",
        dest="prefix",
        metavar="FILE",
        help="write FILE.csv and FILE.json (default: evaluate.* beside the "
        "checkpoint; --out: its old name)",
    )
    p.add_argument(
        "--device",
        type=parse_device,
        metavar="auto|cpu|cuda",
        help="where torch runs (default: the checkpoint's config)",
    )
    p.add_argument(
        "--levels",
        help="level checkpoints: evaluate on this level set (e.g. "
        "atari-heldout) instead of the training levels",
    )
    return p.parse_args(argv)


def parse_oracle(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m meta_train oracle",
        description="train and evaluate the oracles of a task family",
    )
    p.add_argument(
        "--config",
        required=True,
        help="a halfcheetah-dir or -vel config (a path or a shipped config's name)",
    )
    p.add_argument("--out", required=True, help="output directory (resumable)")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument(
        "--meta-batch",
        type=int,
        default=5,
        help="trajectory batches of `trajectories` per iteration (all the one task)",
    )
    p.add_argument("--eval-trajectories", type=int, default=40)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_option(p)
    return p.parse_args(argv)


def run_oracle(args: argparse.Namespace) -> int:
    from meta_train.oracle import train_oracles

    if args.iterations < 1 or args.meta_batch < 1 or args.eval_trajectories < 2:
        raise UserError("--iterations and --meta-batch must be ≥ 1, --eval-trajectories ≥ 2")
    cfg = load_config(args.config, args.overrides, defaults=DEFAULTS)
    summary = train_oracles(
        cfg,
        Path(args.out),
        iterations=args.iterations,
        meta_batch=args.meta_batch,
        eval_trajectories=args.eval_trajectories,
        progress=not args.no_progress,
    )
    print(f"oracle mean return {summary['mean']:.1f}: {Path(args.out) / 'oracle.json'}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    # torch (agent.checkpoint, meta_train.loop) is imported only once needed: a bad option or
    # config is reported without the seconds of its import
    saved = None
    if args.resume:
        from agent.checkpoint import CHECKPOINT_NAME, load_checkpoint

        ckpt = Path(args.out) / CHECKPOINT_NAME
        saved = load_checkpoint(ckpt) if ckpt.is_file() else None
        if saved is None and args.config is None:  # a mistyped --out must not train defaults
            raise UserError(
                f"--resume: {ckpt} does not exist: check --out, or give --config to start "
                "a run there (--resume with --config continues it when it exists)"
            )
    if saved is not None and args.config is None:
        cfg = apply_overrides(
            saved["config"],
            args.overrides,
            source="the checkpoint's config (--set)",
            reference=DEFAULTS,
        )
    else:
        cfg = load_config(args.config, args.overrides, defaults=DEFAULTS)
    if args.meta_optimizer:
        cfg["meta_optimizer"] = args.meta_optimizer
    if args.adapt_steps is not None:
        cfg["adapt_steps"] = args.adapt_steps
    if args.iterations is not None:
        cfg["iterations"] = args.iterations
    if saved is not None:
        check_resume(saved, cfg, args)
    if args.address and args.backend != "ray":
        raise UserError("--address is for --backend ray: add it, or leave --address out")
    # where rollouts run is this call's choice, not the run's: a resume may change it
    cfg["backend"], cfg["ray_address"] = args.backend, args.address
    from meta_train.loop import train

    path = train(cfg, args.out, resume=args.resume, joint=args.joint, progress=not args.no_progress)
    print(f"checkpoint: {path}")
    return 0


def check_resume(saved: dict[str, Any], cfg: dict[str, Any], args: argparse.Namespace) -> None:
    """A resume changes a run's settings (the checkpoint `saved`'s config) only where this
    call says so (--set, --adapt-steps): a config file edited since, or a --set left out,
    would otherwise change them silently."""
    named = {o.partition("=")[0].strip() for o in args.overrides}
    if args.adapt_steps is not None or saved.get("joint"):  # joint: train() sets 0 steps
        named.add("adapt_steps")
    conflicts = resume_conflicts(saved["config"], cfg, named)
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise UserError(
            f"--resume {args.out}: {conflicts[0]}{more}; give the run's settings again "
            "(its config.yaml), --set KEY=VALUE to change one on purpose, or leave out "
            "--config to resume with the run's own"
        )


def run_evaluate(args: argparse.Namespace) -> int:
    from meta_train.evaluate import evaluate, format_table, output_paths

    if args.tasks < 1 or args.adapt_steps < 0:
        raise UserError("--tasks must be ≥ 1 and --adapt-steps ≥ 0")
    if args.trajectories is not None and args.trajectories < 1:
        raise UserError(f"--trajectories {args.trajectories}: give at least 1 (or leave it out)")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: give 0 (sample here) or more")
    lrs = None
    if args.inner_lr:
        try:
            lrs = [float(x) for x in args.inner_lr.split(",")]
        except ValueError:
            raise UserError(f"--inner-lr {args.inner_lr!r}: give numbers like 0.1,0.05") from None
    out = args.prefix or str(Path(args.checkpoint).with_name("evaluate"))
    results = evaluate(
        args.checkpoint,
        tasks=args.tasks,
        adapt_steps=args.adapt_steps,
        trajectories=args.trajectories,
        pretrained=args.pretrained,
        seed=args.seed,
        inner_lr=lrs,
        workers=args.workers,
        out=out,
        levels=args.levels,
        device=args.device,
    )
    print(format_table(results))
    print("written: " + ", ".join(str(path) for path in output_paths(out)))
    return 0


SUBCOMMANDS: dict[
    str, tuple[Callable[[list[str]], argparse.Namespace], Callable[[argparse.Namespace], int], str]
] = {
    "train": (parse_train, run_train, "meta-train a policy initialization (the default)"),
    "evaluate": (
        parse_evaluate,
        run_evaluate,
        "returns of a checkpoint after 0..N adaptation steps on fresh tasks",
    ),
    "oracle": (parse_oracle, run_oracle, "train and evaluate the oracles of a task family"),
}


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """`python -m meta_train [train|evaluate|oracle] ...`: no subcommand is `train`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["train", *argv]
    commands = {
        name: ("meta_train.cli", (name,), desc) for name, (_, _, desc) in SUBCOMMANDS.items()
    }
    name, rest = parse_command(
        command_parser("python -m meta_train", __doc__.splitlines()[0], commands), argv
    )
    parse, run, _ = SUBCOMMANDS[name]
    return run(parse(rest))
