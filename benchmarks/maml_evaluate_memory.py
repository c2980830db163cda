"""Peak memory of MAML's graph-free loss and KL check on one full-resolution image task.

    python benchmarks/maml_evaluate_memory.py [--frames 2000]

`MetaLearner.evaluate` is what TRPO's line search and PPO's `target_kl` check call. One task of
`--frames` inner + `--frames` outer 84×84×4 frames (synthetic, as benchmarks/maml_memory.py),
the Nature CNN, `grad_chunk: 200`. Each side runs in its own fresh subprocess and reports how
much the check raised the process's peak RSS (VmHWM) above its peak after the data was made:

- ours: `evaluate` (detached chunked inner steps, D_S in chunks under no_grad);
- reference: `task_objective(create_graph=False)`, what `evaluate` ran before (the whole task's
  inner step and outer forward at once, with autograd's graph).

Both values are printed (they must agree). Last line:
`BENCH maml_evaluate_memory added_mb=<ours> target=<=0.25×reference`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from maml_memory import GRAD_CHUNK, INNER_LR, ROOT, SPEC, peak_rss_mb, synthetic  # noqa: E402


def child(mode: str, frames: int) -> None:
    import torch

    from agent.policies import build_policy
    from meta_train.meta_learner import AdvantageBatch, MetaLearner, TaskBatch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    learner = MetaLearner(
        build_policy(SPEC), adapt_steps=1, inner_lr=INNER_LR, grad_chunk=GRAD_CHUNK
    )
    [(tr_o, tr_a, tr_adv, va_o, va_a, va_adv)] = synthetic(1, frames, seed=1)
    valid = AdvantageBatch(va_o, va_a, va_adv, 0.0)
    with torch.no_grad():
        logp, dist_params = learner.log_prob(learner.detached(), valid)
    batch = TaskBatch({}, [AdvantageBatch(tr_o, tr_a, tr_adv, 0.0)], valid, logp, dist_params)
    before = peak_rss_mb()
    if mode == "ours":
        loss, kl = learner.evaluate([batch])
    else:
        loss_t, kl_t = learner.task_objective(batch, create_graph=False)
        loss, kl = float(loss_t.detach()), float(kl_t.detach())
    print(json.dumps({"added_mb": peak_rss_mb() - before, "loss": loss, "kl": kl}))


def run_child(mode: str, frames: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--frames", str(frames)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed (rc {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="inner and outer frames each")
    parser.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 1:
        raise SystemExit(f"--frames must be at least 1, got {args.frames}")
    if args.child:
        child(args.child, args.frames)
        return
    ours, ref = run_child("ours", args.frames), run_child("reference", args.frames)
    for name, r in (("ours", ours), ("reference", ref)):
        print(f"{name}: +{r['added_mb']:.0f} MB peak, loss {r['loss']:.9g}, KL {r['kl']:.9g}")
    target = 0.25 * ref["added_mb"]
    print(f"BENCH maml_evaluate_memory added_mb={ours['added_mb']:.0f} target=<={target:.0f}")


if __name__ == "__main__":
    main()
