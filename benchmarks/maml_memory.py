"""Peak memory of one second-order MAML meta-iteration with the Nature CNN on 84×84×4 frames.

    python benchmarks/maml_memory.py [--tasks 8] [--trajectories 10] [--steps 100]
                                     [--skip-halfcheetah]

Synthetic uint8 frames, a categorical policy (7 actions), one inner step, `--tasks` tasks of
`--trajectories` × `--steps` frames each for the inner step and as many for the outer loss.
Three implementations, each in its own fresh subprocess, peak RSS read from /proc/self/status
(VmHWM) at the end:

- ours: meta_train's MetaLearner with `grad_chunk: 200` — frames stored as uint8, the
  meta-gradient accumulated task by task, and within a task computed by recomputation in chunks
  of 200 frames (reverse mode through the inner step as per-chunk Hessian-vector products), so
  one chunk's second-order graph is alive at a time;
- ours-task (shown, not the target): `grad_chunk: 0` — uint8 and task by task only, one whole
  task's graph alive at a time;
- naive: written here — frames stored as float32, every task's second-order graph kept until one
  backward on the summed meta-loss (the pytorch-maml-rl pattern).

All three compute the same meta-gradient (checked: max abs difference printed). The spec's scale is
10 trajectories × 200 steps per task: measured at 10 × 20, the naive side costs ~0.39 MB per
frame (float32 frames + kept graphs), i.e. ~13 GB at 10 × 200 beside other jobs on this 24 GB,
2-core machine, and ~6 min of CPU per side. The default is 10 × 100 (the HalfCheetah horizon):
~6.5 GB naive; `--steps 200` runs the spec's scale.

Also times one meta-iteration of meta_train/configs/halfcheetah-dir.yaml (TRPO, 10 tasks × 10
trajectories × 100 steps, 1 inner step), split into sampling and learning.
Last line: `BENCH maml_memory ratio=<ours/naive> target=0.25`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = {"body": "cnn", "obs_shape": [4, 84, 84], "action": {"type": "discrete", "n": 7}}
INNER_LR = 0.1
GRAD_CHUNK = 200  # ours: `grad_chunk: 200` (frames per recomputed chunk)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic(tasks: int, frames: int, seed: int) -> list[tuple]:
    """Per task: (train obs, actions, advantages, valid obs, actions, advantages), uint8 frames."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(tasks):
        item = []
        for _ in range(2):
            obs = torch.randint(0, 256, (frames, 4, 84, 84), generator=g, dtype=torch.uint8)
            act = torch.randint(0, 7, (frames,), generator=g)
            adv = torch.randn(frames, generator=g)
            item += [obs, act, (adv - adv.mean()) / adv.std()]
        out.append(tuple(item))
    return out


def child(mode: str, tasks: int, frames: int, threads: int) -> None:
    import torch
    from torch.func import functional_call

    from agent.policies import build_policy

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy = build_policy(SPEC)
    data = synthetic(tasks, frames, seed=1)
    t0 = time.perf_counter()
    if mode.startswith("ours"):
        from meta_train.meta_learner import AdvantageBatch, MetaLearner, TaskBatch
        from meta_train.meta_optimizers import flat

        chunk = GRAD_CHUNK if mode == "ours" else 0
        learner = MetaLearner(policy, adapt_steps=1, inner_lr=INNER_LR, grad_chunk=chunk)
        params = learner.meta_parameters()
        for p in params:
            p.grad = None
        for tr_o, tr_a, tr_adv, va_o, va_a, va_adv in data:
            valid = AdvantageBatch(va_o, va_a, va_adv, 0.0)
            with torch.no_grad():  # π_old = the current θ here (the ratio starts at 1)
                logp, dist_params = learner.log_prob(learner.detached(), valid)
            batch = TaskBatch(
                {}, [AdvantageBatch(tr_o, tr_a, tr_adv, 0.0)], valid, logp, dist_params
            )
            _, grads = learner.meta_gradient([batch])  # one task's graph at a time
            for p, g in zip(params, grads, strict=True):
                p.grad = g / tasks if p.grad is None else p.grad + g / tasks
        grad = flat([p.grad for p in params], params)
    else:
        names = [n for n, _ in policy.named_parameters() if not n.startswith("vf.")]
        theta = {n: p for n, p in policy.named_parameters() if n in names}
        # float32 frames (what many implementations store), uint8 copies dropped
        data = [(a.float(), b, c, d.float(), e, f) for a, b, c, d, e, f in data]

        def logp(params: dict, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
            logits, _ = functional_call(policy, params, (obs,))
            return torch.distributions.Categorical(logits=logits).log_prob(act)

        total = torch.zeros(())
        for tr_o, tr_a, tr_adv, va_o, va_a, va_adv in data:
            inner = -(logp(theta, tr_o, tr_a) * tr_adv).mean()
            grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
            adapted = {n: theta[n] - INNER_LR * g for n, g in zip(names, grads, strict=True)}
            with torch.no_grad():
                old = logp(theta, va_o, va_a)
            ratio = (logp(adapted, va_o, va_a) - old).exp()
            total = total + (-(ratio * va_adv).mean()) / tasks
        grads = torch.autograd.grad(total, list(theta.values()))
        grad = torch.cat([g.reshape(-1) for g in grads])
    elapsed = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile(suffix=".pt", delete=False, dir="/tmp") as f:
        torch.save(grad, f.name)
    print(
        json.dumps(
            {"mode": mode, "peak_rss_mb": peak_rss_mb(), "seconds": elapsed, "grad_file": f.name}
        )
    )


def run_child(mode: str, tasks: int, frames: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--tasks",
        str(tasks),
        "--frames",
        str(frames),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed (rc {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def halfcheetah_iteration() -> dict:
    """One meta-iteration of halfcheetah-dir.yaml in a subprocess: sampling and learning time."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [
            sys.executable,
            "-m",
            "meta_train",
            "--config",
            "meta_train/configs/halfcheetah-dir.yaml",
            "--out",
            d,
            "--iterations",
            "2",
            "--no-progress",
            "--set",
            "tensorboard=false",
        ]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        import csv

        with open(Path(d) / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    last = rows[-1]  # the second iteration: no start-up costs
    return {
        "sampling_s": float(last["sampling_s"]),
        "learning_s": float(last["learning_s"]),
        "env_steps": int(last["env_steps"]) - int(rows[0]["env_steps"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--trajectories", type=int, default=10)
    parser.add_argument(
        "--steps",
        type=int,
        default=100,
        help="steps per trajectory (spec: 200; scaled down, see the docstring)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-halfcheetah", action="store_true")
    parser.add_argument("--child", choices=("ours", "ours-task", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        child(args.child, args.tasks, args.frames, args.threads)
        return
    import torch

    frames = args.trajectories * args.steps
    print(
        f"Nature CNN, categorical (7), second-order MAML, 1 inner step: {args.tasks} tasks x "
        f"{args.trajectories} trajectories x {args.steps} steps = {frames} frames per task "
        f"per batch (inner + outer: {2 * frames}); spec scale is 10 x 200",
        flush=True,
    )
    results = {}
    for mode in ("ours", "ours-task", "naive"):
        results[mode] = run_child(mode, args.tasks, frames, args.threads)
        r = results[mode]
        print(
            f"{mode:9s} peak RSS {r['peak_rss_mb']:8.0f} MB   meta-gradient {r['seconds']:6.1f} s",
            flush=True,
        )
    g_naive = torch.load(results["naive"]["grad_file"])
    for mode in ("ours", "ours-task"):
        diff = float((torch.load(results[mode]["grad_file"]) - g_naive).abs().max())
        print(
            f"same meta-gradient: max |{mode} - naive| = {diff:.3g} "
            f"(max |g| = {float(g_naive.abs().max()):.3g})"
        )
    for r in results.values():
        Path(r["grad_file"]).unlink()
    print(
        f"ours-task / naive = "
        f"{results['ours-task']['peak_rss_mb'] / results['naive']['peak_rss_mb']:.3f} "
        f"(uint8 + task by task, without chunked recomputation)"
    )
    if not args.skip_halfcheetah:
        hc = halfcheetah_iteration()
        print(
            f"halfcheetah-dir.yaml meta-iteration (TRPO, {hc['env_steps']} env steps): "
            f"sampling {hc['sampling_s']:.2f} s, learning {hc['learning_s']:.2f} s"
        )
    ratio = results["ours"]["peak_rss_mb"] / results["naive"]["peak_rss_mb"]
    print(f"BENCH maml_memory ratio={ratio:.3f} target=0.25")


if __name__ == "__main__":
    main()
