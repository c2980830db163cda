"""Rainbow as the 2018 Retro Contest's baseline ran it (openai/retro-baselines `rainbow_agent.py`
on anyrl 0.11.17), written to be read top to bottom.

    network   Nature CNN convolutions → noisy fc 512 → dueling distributional heads (51 atoms on
              [−200, 200]); every dense layer is a factorized noisy layer, fresh noise each call
    acting    argmax of the mean Q of the online network (with its noise: no ε-greedy)
    replay    prioritized, 3-step returns, each frame stored once (agent/learners/replay.py)
    update    after each transition enters the replay, once it holds `learning_starts`:
                a* = argmax_a Q_online(s', a)                       (double Q, fresh noise)
                target = Φ(r + γ^n z, p_target(s', a*))              (C51 projection)
                loss_i = w_i · KL(target ‖ p_online(s, a))           (w: importance weights)
                Adam on mean(loss); priorities ← loss_i             (anyrl passes the weighted loss)
    target    copied from the online network at the start and every `target_interval`
              transitions

`Rainbow` holds the two networks, the optimizer and the counters; `learn` plays a Gymnasium
vector environment (autoreset mode SAME_STEP) into a `FrameReplay` and updates.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agent.checkpoint import set_rng_state
from agent.learners.ppo import Learner, finished_episodes, make_adam
from agent.learners.replay import FrameReplay, ReplayBatch
from agent.policies import BODY_GAIN, nature_convs, set_channels_last
from agent.train_log import EpisodeTracker, TrainLogger

RainbowSpec = dict[str, Any]
KIND = "rainbow"


@dataclass
class RainbowConfig:
    """The learner's hyperparameters, the one source of their defaults: the 2018 Retro Contest
    baseline's (openai/retro-baselines `agents/rainbow_agent.py` on anyrl 0.11.17:
    `rainbow_models(min_val=-200, max_val=200)`, `NStepPlayer(..., 3)`,
    `PrioritizedReplayBuffer(500000, 0.5, 0.4, epsilon=0.1)`, `dqn.optimize(learning_rate=1e-4)`,
    `dqn.train(train_interval=1, target_interval=8192, batch_size=32, min_buffer_size=20000)`;
    the other values are anyrl's defaults at that version)."""

    # --- return distribution (C51)
    atoms: int = 51  # atoms of each action's return distribution (anyrl default)
    # support [v_min, v_max]: the baseline's min_val / max_val, sized for Sonic's unscaled
    # rewards (an episode's progress reward is up to 9000)
    v_min: float = -200.0
    v_max: float = 200.0
    sigma0: float = 0.5  # noisy layers: initial σ = sigma0/√inputs (anyrl default; no ε-greedy)
    # --- returns
    n_step: int = 3  # n-step returns (NStepPlayer); an episode end inside the window cuts it
    gamma: float = 0.99  # discount (anyrl DQN default)
    # --- prioritized replay
    # transitions kept; each 84×84 frame is stored once (≈7.1 kB a transition,
    # docs/benchmarks.md#rainbow_memory). Not saved in checkpoints
    capacity: int = 500_000
    alpha: float = 0.5  # priority = (error + priority_epsilon)^alpha
    beta: float = 0.4  # importance weights (N·P(i))^−beta, divided by their largest possible value
    priority_epsilon: float = 0.1  # added to every error (the loss) before the exponent
    # --- optimization
    lr: float = 1e-4  # Adam learning rate
    adam_eps: float = 1.5e-4  # Adam epsilon (anyrl DQN.optimize default)
    batch_size: int = 32  # transitions per update
    train_interval: int = 1  # one update per transition entering the replay
    # copy the online network to the target network every this many transitions
    target_interval: int = 8192
    learning_starts: int = 20_000  # no update before the replay holds this many transitions

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> RainbowConfig:
        """Take the learner's keys of a config dict (wrapper settings and others are ignored)."""
        out = cls()
        for f in fields(cls):
            if f.name in cfg:
                kind = int if f.type in ("int", int) else float
                setattr(out, f.name, kind(cfg[f.name]))
        if out.atoms < 2 or out.v_max <= out.v_min:
            raise ValueError("need atoms ≥ 2 and v_max > v_min")
        small = [
            k
            for k in ("n_step", "batch_size", "train_interval", "target_interval")
            if getattr(out, k) < 1
        ]
        if small:
            raise ValueError(f"{', '.join(small)} must be at least 1")
        if out.capacity < 1000:
            raise ValueError(f"capacity must be at least 1000 transitions, not {out.capacity}")
        return out


# ---------------------------------------------------------------------------- network


def signed_sqrt(x: Tensor) -> Tensor:
    """f(x) = sign(x)·√|x|, the factorized noise's shaping."""
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """anyrl's factorized noisy dense layer (Fortunato et al. 2017):

        y = x·(μ_w + σ_w ⊙ f(ε_in) f(ε_out)ᵀ) + μ_b + σ_b ⊙ ε_b,   f(x) = sign(x)·√|x|

    with ε_in, ε_out, ε_b ~ N(0, 1) drawn on every call (anyrl draws them per session.run; its
    bias noise is not factorized). μ_w: truncated normal with std 1/√in, or orthogonal with
    `gain` when given (anyrl's fc layer); μ_b: 0; σ_w, σ_b: truncated normal with std σ0/√in.
    """

    def __init__(
        self, n_in: int, n_out: int, sigma0: float = 0.5, gain: float | None = None
    ) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.weight_mu = nn.Parameter(torch.empty(n_out, n_in))
        self.weight_sigma = nn.Parameter(torch.empty(n_out, n_in))
        self.bias_mu = nn.Parameter(torch.zeros(n_out))
        self.bias_sigma = nn.Parameter(torch.empty(n_out))
        std = 1.0 / math.sqrt(n_in)
        if gain is None:
            nn.init.trunc_normal_(self.weight_mu, std=std, a=-2 * std, b=2 * std)
        else:
            nn.init.orthogonal_(self.weight_mu, gain)
        s = sigma0 * std  # TF's truncated normal cuts at 2 standard deviations
        nn.init.trunc_normal_(self.weight_sigma, std=s, a=-2 * s, b=2 * s)
        nn.init.trunc_normal_(self.bias_sigma, std=s, a=-2 * s, b=2 * s)

    def sample_noise(self) -> tuple[Tensor, Tensor, Tensor]:
        dev = self.weight_mu.device
        return (
            signed_sqrt(torch.randn(self.n_in, device=dev)),
            signed_sqrt(torch.randn(self.n_out, device=dev)),
            torch.randn(self.n_out, device=dev),
        )

    def forward(self, x: Tensor, noise: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        eps_in, eps_out, eps_b = noise if noise is not None else self.sample_noise()
        # x·(σ_w ⊙ ε_in ε_outᵀ) = ((x ⊙ ε_in)·σ_w) ⊙ ε_out: no in×out noise matrix per call
        return (
            F.linear(x, self.weight_mu, self.bias_mu + self.bias_sigma * eps_b)
            + F.linear(x * eps_in, self.weight_sigma) * eps_out
        )


def _first_conv_in_blocks(obs: Tensor, conv: nn.Module) -> Tensor | None:
    """The Nature CNN's first convolution (8×8, stride 4) of obs/255 computed as a 2×2,
    stride-1 convolution over 4×4 pixel blocks (space to depth): the same products and sums.
    On CPU its weight gradient takes about half the time of the strided one (the forward alone
    is slower, so only training calls use it); None where it does not apply."""
    n, c, h, w = obs.shape
    if (
        obs.device.type != "cpu"
        or not isinstance(conv, nn.Conv2d)
        or conv.kernel_size != (8, 8)
        or conv.stride != (4, 4)
        or conv.padding != (0, 0)
        or h % 4
        or w % 4
    ):
        return None
    blocks = obs.reshape(n, c, h // 4, 4, w // 4, 4).permute(0, 1, 3, 5, 2, 4)
    x = blocks.to(torch.float32, copy=True).div_(255.0).reshape(n, c * 16, h // 4, w // 4)
    o = conv.out_channels
    weight = conv.weight.view(o, c, 2, 4, 2, 4).permute(0, 1, 3, 5, 2, 4)
    return F.conv2d(x, weight.reshape(o, c * 16, 2, 2), conv.bias)


class RainbowNet(nn.Module):
    """anyrl's NatureDistQNetwork with dueling and noisy layers: forward(obs) is the log
    probabilities (N, actions, atoms) of each action's return distribution."""

    support: Tensor  # the atoms' values, a registered buffer

    def __init__(self, spec: RainbowSpec) -> None:
        super().__init__()
        self.spec = dict(spec)
        self.n_actions, self.atoms = int(spec["n_actions"]), int(spec["atoms"])
        sigma0 = float(spec["sigma0"])
        self.convs, flat = nature_convs(spec["obs_shape"])
        self.fc = NoisyLinear(flat, int(spec["features"]), sigma0, gain=BODY_GAIN)
        self.advantage = NoisyLinear(int(spec["features"]), self.n_actions * self.atoms, sigma0)
        self.value = NoisyLinear(int(spec["features"]), self.atoms, sigma0)
        self.register_buffer(
            "support", torch.linspace(float(spec["v_min"]), float(spec["v_max"]), self.atoms)
        )
        self.channels_last = False

    def use_channels_last(self, enabled: bool = True) -> None:
        """NHWC convolutions: same numbers, faster on CPU (see NatureCNN.use_channels_last)."""
        self.channels_last = enabled
        set_channels_last(self.convs, enabled)

    def forward(self, obs: Tensor) -> Tensor:
        first = None
        if torch.is_grad_enabled() and not self.channels_last:
            first = _first_conv_in_blocks(obs, self.convs[0])
        if first is not None:
            features = self.convs[2:](F.relu(first))
        else:
            x = obs.float() / 255.0
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features = self.convs(x)
        h = F.relu(self.fc(features))
        adv = self.advantage(h).view(-1, self.n_actions, self.atoms)
        value = self.value(h).view(-1, 1, self.atoms)
        return F.log_softmax(value + adv - adv.mean(dim=1, keepdim=True), dim=-1)

    def q_values(self, log_probs: Tensor) -> Tensor:
        return (log_probs.exp() * self.support).sum(-1)


def rainbow_spec(
    obs_shape: tuple[int, ...], n_actions: int, cfg: RainbowConfig, features: int = 512
) -> RainbowSpec:
    return {
        "kind": KIND,
        "obs_shape": [int(x) for x in obs_shape],
        "n_actions": int(n_actions),
        "atoms": cfg.atoms,
        "v_min": cfg.v_min,
        "v_max": cfg.v_max,
        "sigma0": cfg.sigma0,
        "features": int(features),
        # what agent.checkpoint.check_policy_fits reads
        "action": {"type": "discrete", "n": int(n_actions)},
    }


# ---------------------------------------------------------------------------- loss


def project_distribution(
    probs: Tensor, returns: Tensor, discounts: Tensor, support: Tensor
) -> Tensor:
    """C51's projection of the distribution r + γ·Z (Z: `probs` on `support`) back onto the
    support, as anyrl's ActionDist.add_rewards: each atom's mass is split between the two
    nearest atoms in proportion to closeness; values outside the support go to its ends."""
    atoms = support.numel()
    v_min, v_max = float(support[0]), float(support[-1])
    delta = (v_max - v_min) / (atoms - 1)
    pos = (returns[:, None] + discounts[:, None] * support[None, :] - v_min) / delta
    pos = pos.clamp(1e-18, atoms - 1)  # > 0: ceil(pos) − 1 stays a valid index
    upper = pos.ceil()
    frac_lower = upper - pos  # an exact atom (pos integer) keeps all its mass
    lower = (upper - 1).long()
    out = torch.zeros_like(probs)
    out.scatter_add_(1, lower, probs * frac_lower)
    out.scatter_add_(1, lower + 1, probs * (1.0 - frac_lower))
    return out


def rainbow_losses(online: RainbowNet, target: RainbowNet, batch: dict[str, Tensor]) -> Tensor:
    """KL(projected target ‖ online) per transition (anyrl's DistQNetwork.transition_loss:
    three separate network calls, each with its own noise)."""
    rows = torch.arange(batch["actions"].shape[0], device=batch["actions"].device)
    with torch.no_grad():
        next_actions = online.q_values(online(batch["next_obs"])).argmax(dim=1)
        target_probs = target(batch["next_obs"])[rows, next_actions].exp()
        projected = project_distribution(
            target_probs, batch["returns"], batch["discounts"], online.support
        )
    log_q = online(batch["obs"])[rows, batch["actions"]]
    return (torch.special.xlogy(projected, projected) - projected * log_q).sum(dim=-1)


# ---------------------------------------------------------------------------- learner


class Rainbow(Learner[RainbowConfig]):
    """Online and target networks (the target: a frozen copy, synced every `target_interval`
    transitions), Adam, and the counters a resume needs."""

    def __init__(
        self, net: RainbowNet, config: RainbowConfig, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__(config, device)
        # not channels-last: at batch 32 it was slower here (unlike PPO's 512-sample minibatches)
        self.online = net.to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = make_adam(self.online, config.lr, config.adam_eps)
        self.transitions = 0  # transitions that entered the replay (anyrl's steps_taken)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        log_probs = self.online(torch.from_numpy(np.asarray(obs)).to(self.device))
        return self.online.q_values(log_probs).argmax(dim=1).cpu().numpy()

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    def _tensors(self, batch: ReplayBatch) -> dict[str, Tensor]:
        names = ("obs", "actions", "returns", "discounts", "next_obs", "weights")
        return {k: torch.from_numpy(getattr(batch, k)).to(self.device) for k in names}

    def update(self, replay: FrameReplay, rng: np.random.Generator) -> float:
        """One Adam step on a prioritized batch; returns the loss."""
        batch = replay.sample(self.config.batch_size, rng)
        t = self._tensors(batch)
        losses = t["weights"] * rainbow_losses(self.online, self.target, t)
        loss = losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        replay.update_priorities(batch.slots, losses.detach().cpu().numpy())
        self.updates += 1
        return float(loss.detach())

    def state(self) -> dict[str, Any]:
        return {
            "target_state": {k: v.detach().cpu() for k, v in self.target.state_dict().items()},
            "transitions": self.transitions,
        }

    def load(self, saved: dict[str, Any], *, optimizer: bool = True) -> None:
        """Weights (and, for a resume, target, optimizer and counters) from a checkpoint."""
        self.online.load_state_dict(saved["policy_state"])
        self.target.load_state_dict(saved.get("target_state", saved["policy_state"]))
        if optimizer and "optimizer" in saved:
            self.optimizer.load_state_dict(saved["optimizer"])
        if optimizer:
            for name in ("timesteps", "transitions", "updates", "episodes"):
                setattr(self, name, int(saved.get(name, 0)))


def make_replay(config: RainbowConfig, obs_shape: tuple[int, ...], nenvs: int) -> FrameReplay:
    return FrameReplay(
        config.capacity,
        tuple(obs_shape[1:]),
        stack=int(obs_shape[0]),
        n_step=config.n_step,
        gamma=config.gamma,
        nenvs=nenvs,
        alpha=config.alpha,
        beta=config.beta,
        epsilon=config.priority_epsilon,
    )


def learn(
    agent: Rainbow,
    envs: Any,
    *,
    total_timesteps: int | None,
    logger: TrainLogger | None = None,
    log_interval: int = 1000,
    on_step: Callable[[Rainbow], None] | None = None,
    seed: int | None = None,
    replay: FrameReplay | None = None,
) -> EpisodeTracker:
    """Play and learn until `total_timesteps` environment steps (None: until an exception, e.g.
    the contest's BudgetExhausted). `on_step(agent)` runs after every environment step."""
    cfg = agent.config
    nenvs = int(envs.num_envs)
    obs, _ = envs.reset(seed=seed)
    if replay is None:
        replay = make_replay(cfg, obs.shape[1:], nenvs)
    replay.start(obs[:, -1])
    rng = np.random.default_rng(seed)
    tracker = EpisodeTracker()
    next_train = agent.transitions + cfg.train_interval
    next_target = agent.transitions + cfg.target_interval
    if agent.transitions == 0:
        agent.sync_target()
    losses: list[float] = []
    last_time, last_steps = time.monotonic(), agent.timesteps
    while total_timesteps is None or agent.timesteps < total_timesteps:
        actions = agent.act(obs)
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        dones = np.asarray(terminated) | np.asarray(truncated)  # anyrl: any end is terminal
        agent.timesteps += nenvs
        ready = len(replay.add(actions, rewards, dones, obs[:, -1]))
        for i in range(ready):  # one at a time, as anyrl adds them: size counts up by one
            agent.transitions += 1
            size = replay.size - (ready - 1 - i)
            if size >= cfg.learning_starts and agent.transitions >= next_train:
                next_train = agent.transitions + cfg.train_interval
                losses.append(agent.update(replay, rng))
            if agent.transitions >= next_target:
                next_target = agent.transitions + cfg.target_interval
                agent.sync_target()
        for ret, length in finished_episodes(infos):
            tracker.add(ret, length, agent.timesteps)
            agent.episodes += 1
        if logger is not None and agent.timesteps // nenvs % max(1, log_interval // nenvs) == 0:
            now = time.monotonic()
            fps = (agent.timesteps - last_steps) / max(now - last_time, 1e-9)
            last_time, last_steps = now, agent.timesteps
            _log_progress(logger, agent, tracker, losses, fps)
        if on_step is not None:
            on_step(agent)
    return tracker


def _log_progress(
    logger: TrainLogger, agent: Rainbow, tracker: EpisodeTracker, losses: list[float], fps: float
) -> None:
    """One progress line and log row; `losses` (those since the last row) is emptied."""
    logger.advance(agent.timesteps, {"ret": f"{tracker.mean_return:.1f}", "fps": f"{fps:.0f}"})
    logger.log_episodes(tracker.take_unlogged())
    logger.log(
        {
            "timesteps": agent.timesteps,
            "updates": agent.updates,
            "episodes": agent.episodes,
            "mean_return": tracker.mean_return,
            "mean_length": tracker.mean_length,
            "fps": fps,
            "loss": float(np.mean(losses)) if losses else math.nan,
            "lr": agent.config.lr,
        }
    )
    losses.clear()


def net_for_spaces(
    checkpoint: dict[str, Any] | None,
    cfg: RainbowConfig,
    features: int,
    observation_space: Any,
    action_space: Any,
    source: str,
) -> RainbowNet:
    """The checkpoint's network if given (it must be a Rainbow network that fits the spaces),
    else a new one."""
    from agent.policies import check_policy_fits
    from sonic_common.errors import UserError

    if checkpoint is None:
        return RainbowNet(rainbow_spec(observation_space.shape, int(action_space.n), cfg, features))
    spec = checkpoint["policy_spec"]
    if spec.get("kind") != KIND:
        raise UserError(
            f"cannot load {source}: it holds a {spec.get('kind', 'PPO')} policy, "
            "not a Rainbow network (train one with agent.train --algo rainbow)"
        )
    problem = check_policy_fits(spec, observation_space, action_space)
    if problem:
        raise UserError(f"cannot load {source}: {problem}")
    net = RainbowNet(spec)
    net.load_state_dict(checkpoint["policy_state"])
    return net


def rainbow_for_spaces(
    saved: dict[str, Any] | None,
    cfg: RainbowConfig,
    features: int,
    envs: Any,
    device: torch.device,
    source: str,
    *,
    resume: bool,
) -> Rainbow:
    """A Rainbow learner on the vector env's spaces: a new one, or the network in `saved`;
    with `resume` also its target, optimizer, counters and the RNG state saved with it."""
    net = net_for_spaces(
        saved, cfg, features, envs.single_observation_space, envs.single_action_space, source
    )
    agent = Rainbow(net, cfg, device)
    if saved is not None:
        agent.load(saved, optimizer=resume)
        if resume and "rng" in saved:
            set_rng_state(saved["rng"])
    return agent
