"""Every CUDA path of the project, run on the GPU and compared with the CPU on the same data.

    scripts/gpu-check [--device cuda] [--tolerance 1e-4] [--checks NAME,...]

Checks (each: the same seeded inputs and initial weights on both devices; the relative
difference ‖gpu − cpu‖ / ‖cpu‖ of every output must stay under the tolerance):

1. ppo-update: one PPO2 update (agent.learners.ppo.PPO, the Nature CNN on 84×84×4 uint8 frames).
2. level-meta-iteration: a second-order level meta-gradient at 84×84×4 (meta_train's
   MetaLearner with `grad_chunk`, 2 tasks × 16 frames), then a TRPO meta-step on it (3 CG
   iterations: second-order products through the CNN take minutes on a CPU).
3. maml-agent-adaptation: the MAML agent's inner step on frames
   (agent.learners.adaptation.inner_step_chunked, as agent.maml calls it).
4. halfcheetah-meta-iteration: a HalfCheetah meta-iteration (real MuJoCo rollouts sampled on the
   CPU, the stacked TRPO step on the device).
5. rainbow-update: two Rainbow updates (agent.learners.rainbow: double Q, C51 projection, Adam,
   new priorities) from a prioritized replay of 84×84 frames, the noisy layers' noise drawn
   the same on both devices.

TF32 is turned off for the comparison (it trades ≈ 1e-3 relative precision for speed). Exits 0
when every check passes, 1 when one fails, 2 when the device is not there. Runs in well under 5
minutes on one GPU. `--device cpu` runs the same checks CPU against CPU (the self-test of CI).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FRAMES = {"body": "cnn", "obs_shape": [4, 84, 84], "action": {"type": "discrete", "n": 7}}
Outputs = list[Tensor]


def rel_diff(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def frames(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 256, (n, 4, 84, 84), generator=g, dtype=torch.uint8),
        torch.randint(0, 7, (n,), generator=g),
        torch.randn(n, generator=g),
    )


def ppo_update(device: torch.device) -> Outputs:
    from agent.learners.ppo import PPO, PPOConfig
    from agent.learners.rollout import Batch
    from agent.policies import build_policy

    torch.manual_seed(0)
    policy = build_policy(FRAMES)
    ppo = PPO(policy, PPOConfig.from_dict({"nminibatches": 2, "noptepochs": 1}), device)
    obs, actions, adv = frames(64, 1)
    with torch.no_grad():
        dist_params, values = ppo.policy(obs.to(device))
        logp = ppo.policy.distribution(dist_params).log_prob(actions.to(device))
    batch = Batch(
        obs.to(device), actions.to(device), logp, values, adv.to(device), (values + adv.to(device))
    )
    ppo.update(batch, generator=torch.Generator().manual_seed(2))
    return [p.detach() for p in ppo.policy.parameters()]


def level_meta_iteration(device: torch.device) -> Outputs:
    from agent.policies import build_policy
    from meta_train.meta_learner import AdvantageBatch, MetaLearner, TaskBatch
    from meta_train.meta_optimizers import TRPO

    torch.manual_seed(0)
    learner = MetaLearner(build_policy(FRAMES).to(device), inner_lr=0.1, grad_chunk=8)
    batches = []
    for task in range(2):
        train, valid = (
            AdvantageBatch(*(x.to(device) for x in frames(16, 10 * task + k)), 0.0) for k in (1, 2)
        )
        with torch.no_grad():
            logp, dist_params = learner.log_prob(
                learner.adapted_detached(learner.detached(), train), valid
            )
        batches.append(TaskBatch({"kind": "levels"}, [train], valid, logp, dist_params))
    loss, grads = learner.meta_gradient(batches)
    TRPO(learner, max_kl=0.01, cg_iters=3).step(batches)  # CG iterations: the CPU side's time
    return [torch.tensor(loss), *grads, *learner.meta_parameters()]


def maml_agent_adaptation(device: torch.device) -> Outputs:
    from agent.learners.adaptation import inner_step_chunked, policy_parameters
    from agent.policies import build_policy

    torch.manual_seed(0)
    policy = build_policy(FRAMES).to(device)
    obs, actions, adv = frames(96, 3)  # frames stay on the CPU, chunks move, as in agent.maml
    adapted = inner_step_chunked(
        policy, policy_parameters(policy), obs, actions, adv, lr=0.1, chunk=40
    )
    return list(adapted.values())


def halfcheetah_meta_iteration(device: torch.device) -> Outputs:
    from agent.config import load_config
    from agent.policies import build_policy
    from meta_train.collect import collect
    from meta_train.configs import DEFAULTS
    from meta_train.loop import make_learner, policy_spec
    from meta_train.meta_learner import iteration_seeds
    from meta_train.meta_optimizers import TRPO
    from meta_train.sampler import Sampler
    from meta_train.tasks import TaskDistribution

    cfg = load_config(
        None,
        ["meta_batch=4", "trajectories=4", "task.horizon=50", "task.action_scale=10"],
        defaults=DEFAULTS,
    )
    torch.manual_seed(0)
    cpu_policy = build_policy(policy_spec(cfg))
    dist = TaskDistribution.from_config(cfg)
    rng, seeds = iteration_seeds(1, 0, 4, 1)
    with Sampler(cpu_policy) as sampler:  # the same trajectories for both devices
        batches = collect(make_learner(cpu_policy, cfg), sampler, dist.sample(4, rng), 4, seeds)
    learner = make_learner(cpu_policy.to(device), cfg)
    for b in batches:
        for data in [*b.train, b.valid]:
            data.obs, data.actions = data.obs.to(device), data.actions.to(device)
            data.advantages = data.advantages.to(device)
        b.old_logp, b.old_dist_params = b.old_logp.to(device), b.old_dist_params.to(device)
    info = TRPO(learner, max_kl=0.01).step(batches)
    return [torch.tensor([info["loss_before"], info["loss_after"]]), *learner.meta_parameters()]


def seeded_noise(net: torch.nn.Module, seed: int) -> None:
    """Each noisy layer of `net` draws its noise on the CPU from its own seeded generator, then
    moves it to the layer's device: the same draws on every device (their RNGs differ)."""
    from agent.learners.rainbow import NoisyLinear, signed_sqrt

    for k, layer in enumerate(m for m in net.modules() if isinstance(m, NoisyLinear)):
        g = torch.Generator().manual_seed(seed + k)

        def draw(layer: NoisyLinear = layer, g: torch.Generator = g) -> tuple[Tensor, ...]:
            dev = layer.weight_mu.device
            eps = [torch.randn(n, generator=g) for n in (layer.n_in, layer.n_out, layer.n_out)]
            return signed_sqrt(eps[0]).to(dev), signed_sqrt(eps[1]).to(dev), eps[2].to(dev)

        layer.sample_noise = draw  # type: ignore[method-assign,assignment]


def rainbow_update(device: torch.device) -> Outputs:
    import numpy as np

    from agent.learners.rainbow import Rainbow, RainbowConfig, RainbowNet, make_replay, rainbow_spec

    torch.manual_seed(0)
    cfg = RainbowConfig(capacity=1000, learning_starts=0)
    agent = Rainbow(RainbowNet(rainbow_spec((4, 84, 84), 7, cfg)), cfg, device)
    seeded_noise(agent.online, 100)
    seeded_noise(agent.target, 200)
    replay = make_replay(cfg, (4, 84, 84), nenvs=1)
    rng = np.random.default_rng(0)
    replay.start(rng.integers(0, 256, (1, 84, 84), dtype=np.uint8))
    for t in range(200):  # episodes of 50 steps: some 3-step windows end at an episode's end
        frame = rng.integers(0, 256, (1, 84, 84), dtype=np.uint8)
        replay.add(np.array([t % 7]), np.array([rng.normal()]), np.array([t % 50 == 49]), frame)
    before = [p.detach().clone() for p in agent.online.parameters()]
    losses = torch.tensor([agent.update(replay, rng) for _ in range(2)])
    priorities = torch.from_numpy(replay.tree.sums.copy())
    # the updates themselves: at lr 1e-4 the weights alone would hide a wrong step
    moved = [p.detach() - b for p, b in zip(agent.online.parameters(), before, strict=True)]
    return [losses, priorities, *moved, *(p.detach() for p in agent.online.parameters())]


CHECKS: dict[str, Callable[[torch.device], Outputs]] = {
    "ppo-update": ppo_update,
    "level-meta-iteration": level_meta_iteration,
    "maml-agent-adaptation": maml_agent_adaptation,
    "halfcheetah-meta-iteration": halfcheetah_meta_iteration,
    "rainbow-update": rainbow_update,
}


def run_check(name: str, device: torch.device, tolerance: float) -> bool:
    start = time.perf_counter()
    try:
        expected = CHECKS[name](torch.device("cpu"))
        got = CHECKS[name](device)
        worst = max(rel_diff(g, e) for g, e in zip(got, expected, strict=True))
    except Exception as e:  # a check that crashes is a failed check, reported in one line
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        return False
    ok = worst <= tolerance
    print(
        f"{'ok  ' if ok else 'FAIL'} {name}: max relative difference {worst:.2e} "
        f"(tolerance {tolerance:g}, {time.perf_counter() - start:.1f} s)"
    )
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--checks", default=",".join(CHECKS), help="comma-separated, default: all")
    args = p.parse_args(argv)
    names = [n for n in args.checks.split(",") if n]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown or not names:
        print(
            f"error: unknown check(s) {', '.join(unknown) or '(none)'}: choose from "
            f"{', '.join(CHECKS)}",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"error: this PyTorch ({torch.__version__}) sees no CUDA device: run gpu-check on "
            "a machine with a GPU and a CUDA build of torch",
            file=sys.stderr,
        )
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu-check: torch {torch.__version__}, {where}, against the CPU")
    results = [run_check(name, device, args.tolerance) for name in names]
    print(f"gpu-check: {sum(results)} of {len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
