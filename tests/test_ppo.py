"""PPO: GAE and loss terms against hand computations, learning a tiny task, checkpoints,
configs, level assignment, and `python -m agent.train` end to end."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics

from agent.checkpoint import load_checkpoint, load_policy, save_checkpoint, set_rng_state
from agent.config import DEFAULT_PPO_CONFIG, load_config, read_yaml
from agent.configs import ppo2_defaults
from agent.learners.ppo import PPO, PPOConfig, learn, ppo_loss
from agent.learners.rollout import RolloutBuffer, compute_gae
from agent.policies import build_policy
from agent.training.level_envs import LevelEnv, assign_levels, discrete_actions, level_system
from sonic_common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# --- GAE -----------------------------------------------------------------------------------
# 4 steps, 1 env: step 1 terminates, step 2 is truncated (time limit) with V(final obs) = 10,
# V after the last step = 3. γ = 0.9, λ = 0.8:
#   δ3 = 4 + .9·3 − 2 = 4.7                 A3 = 4.7
#   δ2 = 3 + .9·10 − 1.5 = 10.5              A2 = 10.5        (episode ended: no A3)
#   δ1 = 2 − 1 = 1                           A1 = 1           (terminated: no bootstrap)
#   δ0 = 1 + .9·1 − .5 = 1.4                 A0 = 1.4 + .72·1 = 2.12
REWARDS = [1.0, 2.0, 3.0, 4.0]
VALUES = [0.5, 1.0, 1.5, 2.0]
TERMINATED = [False, True, False, False]
TRUNCATED = [False, False, True, False]
ADVANTAGES = [2.12, 1.0, 10.5, 4.7]


def test_gae_hand_computed() -> None:
    col = lambda xs: torch.tensor(xs, dtype=torch.float32)[:, None]  # noqa: E731
    next_values = col([1.0, 99.0, 10.0, 3.0])  # V(s1); anything (terminated); V(final); last
    dones = [a or b for a, b in zip(TERMINATED, TRUNCATED, strict=True)]
    adv, ret = compute_gae(
        col(REWARDS),
        col(VALUES),
        next_values,
        torch.tensor(TERMINATED)[:, None],
        torch.tensor(dones)[:, None],
        gamma=0.9,
        gae_lambda=0.8,
    )
    assert adv[:, 0].tolist() == pytest.approx(ADVANTAGES)
    assert ret[:, 0].tolist() == pytest.approx(
        [a + v for a, v in zip(ADVANTAGES, VALUES, strict=True)]
    )


def test_rollout_buffer_bootstraps_truncation_only() -> None:
    buf = RolloutBuffer(4, 1, (2,), torch.uint8, (), torch.long)
    for t in range(4):
        buf.add(
            np.full((1, 2), t, dtype=np.uint8),
            torch.tensor([t % 2]),
            torch.tensor([-0.5]),
            torch.tensor([VALUES[t]]),
            np.array([REWARDS[t]]),
            np.array([TERMINATED[t]]),
            np.array([TRUNCATED[t]]),
        )
        if TRUNCATED[t]:
            buf.final_values[t, 0] = 10.0
        if TERMINATED[t]:
            buf.final_values[t, 0] = 99.0  # must be ignored
    assert buf.obs.dtype == torch.uint8
    batch = buf.finish(torch.tensor([3.0]), gamma=0.9, gae_lambda=0.8, device=torch.device("cpu"))
    assert batch.advantages.tolist() == pytest.approx(ADVANTAGES)
    assert batch.obs[:, 0].tolist() == [0, 1, 2, 3] and batch.actions.tolist() == [0, 1, 0, 1]
    assert not buf.full


def test_gae_two_envs_are_independent() -> None:
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values = torch.zeros(2, 2)
    zeros = torch.zeros(2, 2, dtype=torch.bool)
    adv, _ = compute_gae(
        rewards, values, torch.zeros(2, 2), zeros, zeros, gamma=0.5, gae_lambda=1.0
    )
    assert adv.flatten().tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0])  # [t][env]


# --- the loss ------------------------------------------------------------------------------
def test_ppo_loss_terms_hand_computed() -> None:
    old = torch.tensor([-1.0, -2.0])
    ratio = torch.tensor([1.5, 0.5])
    new = old + ratio.log()
    adv = torch.tensor([1.0, -2.0])
    new_v, old_v = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.1])
    ret = torch.tensor([2.0, -1.0])
    entropy = torch.tensor([1.0, 0.5])
    t = ppo_loss(
        new, old, adv, new_v, old_v, ret, entropy, cliprange=0.2, vf_coef=0.5, ent_coef=0.01
    )
    # surrogate: max(−1·1.5, −1·1.2) = −1.2 ; max(2·0.5, 2·0.8) = 1.6  → mean 0.2
    assert float(t["pg_loss"]) == pytest.approx(0.2)
    # value: max((1−2)², (0.7−2)²) = 1.69 ; max((0+1)², (0.0+1)²) = 1 → 0.5·mean = 0.6725
    assert float(t["vf_loss"]) == pytest.approx(0.6725)
    assert float(t["entropy"]) == pytest.approx(0.75)
    assert float(t["loss"]) == pytest.approx(0.2 - 0.01 * 0.75 + 0.5 * 0.6725)
    assert float(t["clipfrac"]) == 1.0
    assert float(t["approx_kl"]) == pytest.approx(0.25 * (math.log(1.5) ** 2 + math.log(0.5) ** 2))
    unclipped = ppo_loss(
        new, old, adv, new_v, old_v, ret, entropy, 0.2, 0.5, 0.01, clip_value=False
    )
    assert float(unclipped["vf_loss"]) == pytest.approx(0.5)
    # both ratios sit on the pessimistic clipped side: no policy gradient at all
    new_req = new.clone().requires_grad_(True)
    ppo_loss(new_req, old, adv, new_v, old_v, ret, entropy, 0.2, 0.5, 0.0)["pg_loss"].backward()
    assert new_req.grad is not None and new_req.grad.tolist() == [0.0, 0.0]
    # at ratio 1 the gradient is −A·r / batch size
    same = old.clone().requires_grad_(True)
    ppo_loss(same, old, adv, new_v, old_v, ret, entropy, 0.2, 0.5, 0.0)["pg_loss"].backward()
    assert same.grad is not None and same.grad.tolist() == pytest.approx([-0.5, 1.0])


# --- a tiny task that PPO must learn -------------------------------------------------------
class ContextBandit(gym.Env):
    """Each step shows a one-hot context (2 kinds); reward 1 for the matching action.

    Episodes end by time limit after 8 steps (truncated): random play returns 4, perfect 8.
    """

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._ctx = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.eye(2, dtype=np.float32)[self._ctx]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._ctx = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self._ctx)
        self._t += 1
        self._ctx = int(self.np_random.integers(2))
        return self._obs(), reward, False, self._t >= 8, {}


def bandit_envs(n: int = 2) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda: RecordEpisodeStatistics(ContextBandit())] * n,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


def small_ppo(seed: int = 0) -> PPO:
    torch.manual_seed(seed)
    policy = build_policy(
        {"body": "mlp", "obs_shape": [2], "hidden": [16], "action": {"type": "discrete", "n": 2}}
    )
    cfg = PPOConfig(
        nsteps=64,
        nminibatches=4,
        noptepochs=4,
        lr=3e-3,
        cliprange=0.2,
        ent_coef=0.0,
        gamma=0.9,
        gae_lambda=0.95,
    )
    return PPO(policy, cfg)


def test_ppo_learns_a_context_bandit() -> None:
    ppo = small_ppo()
    envs = bandit_envs()
    first = learn(ppo, envs, total_timesteps=128, seed=0).tracker
    start = first.mean_return
    learn(ppo, envs, total_timesteps=128 * 12, seed=1)
    later = learn(ppo, envs, total_timesteps=128 * 16, seed=2).tracker  # the last 64 episodes
    envs.close()
    assert 2.5 < start < 5.5  # about random
    assert later.mean_return > 7.0, (start, later.mean_return)
    assert ppo.timesteps == 128 * 16 and ppo.updates == 16
    logits, _ = ppo.policy(torch.eye(2))
    assert logits.argmax(-1).tolist() == [0, 1]


# --- checkpoints ---------------------------------------------------------------------------
def test_checkpoint_round_trip_and_resume(tmp_path: Path) -> None:
    ppo = small_ppo()
    envs = bandit_envs()
    learn(ppo, envs, total_timesteps=256, seed=0)
    path = save_checkpoint(
        tmp_path / "checkpoint.pt",
        ppo.policy,
        config={"nsteps": 64},
        optimizer=ppo.optimizer,
        timesteps=ppo.timesteps,
        updates=ppo.updates,
        episodes=ppo.episodes,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
    rng_after_save = torch.rand(3)

    data = load_checkpoint(path)
    resumed = small_ppo(seed=123)  # different init
    resumed.policy.load_state_dict(data["policy_state"])
    resumed.optimizer.load_state_dict(data["optimizer"])
    resumed.timesteps, resumed.updates = data["timesteps"], data["updates"]
    for a, b in zip(ppo.policy.parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = ppo.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k, state in s1["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][k][name]))
    assert (resumed.timesteps, resumed.updates) == (256, 2) and data["config"] == {"nsteps": 64}
    set_rng_state(data["rng"])
    assert torch.equal(torch.rand(3), rng_after_save)  # RNG restored to the saved point

    rebuilt = load_policy(path)  # the network alone, from the file
    obs = torch.eye(2)
    assert torch.equal(rebuilt(obs)[0], ppo.policy(obs)[0])

    before = [p.detach().clone() for p in resumed.policy.parameters()]
    learn(resumed, envs, total_timesteps=384, seed=1)
    envs.close()
    assert resumed.timesteps == 384 and resumed.updates == 3
    assert any(
        not torch.equal(a, b) for a, b in zip(before, resumed.policy.parameters(), strict=True)
    )


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a policy checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


# --- config --------------------------------------------------------------------------------
def test_default_config_is_the_contest_baseline() -> None:
    cfg = load_config(None)
    ppo = PPOConfig.from_dict(cfg)
    assert cfg["workers"] == 1 and cfg["reward_scale"] == 0.01
    assert (ppo.nsteps, ppo.nminibatches, ppo.noptepochs) == (4096, 8, 3)
    assert (ppo.lr, ppo.lr_schedule, ppo.cliprange, ppo.ent_coef) == (2e-4, "constant", 0.1, 0.01)
    assert (ppo.gamma, ppo.gae_lambda, ppo.vf_coef, ppo.max_grad_norm, ppo.adam_eps) == (
        0.99,
        0.95,
        0.5,
        0.5,
        1e-5,
    )
    # the typed configs are the one source: the shipped YAML restates none of their defaults
    shipped = read_yaml(DEFAULT_PPO_CONFIG)
    assert all(ppo2_defaults()[key] != value for key, value in shipped.items()), shipped
    lines = [ln.strip() for ln in inspect.getsource(PPOConfig).splitlines()]
    for f in dataclasses.fields(PPOConfig):  # every key is commented where its default is
        i = next(i for i, ln in enumerate(lines) if ln.startswith(f"{f.name}:"))
        assert "#" in lines[i] or lines[i - 1].startswith("#"), f.name


def test_config_overrides_and_files(tmp_path: Path) -> None:
    cfg = load_config(None, ["nsteps=64", "lr=3e-4", "clip_value=false", "policy.body=mlp"])
    assert cfg["nsteps"] == 64 and cfg["lr"] == 3e-4 and cfg["clip_value"] is False
    assert cfg["policy"]["body"] == "mlp" and cfg["policy"]["features"] == 512
    with pytest.raises(UserError, match="unknown config key 'nstep'"):
        load_config(None, ["nstep=64"])
    with pytest.raises(UserError, match="key=value"):
        load_config(None, ["nsteps"])
    user = tmp_path / "mine.yaml"
    user.write_text("nsteps: 128\npolicy:\n  hidden: [32]\n")
    cfg = load_config(user, ["nsteps=256"])
    assert cfg["nsteps"] == 256 and cfg["policy"]["hidden"] == [32] and cfg["ent_coef"] == 0.01
    user.write_text("nosuch: 1\n")
    with pytest.raises(UserError, match="nosuch"):
        load_config(user)


def test_config_values_keep_the_kind_of_their_default(tmp_path: Path) -> None:
    """A value of the wrong kind is a one-line error where it is given, not a traceback (or a
    crashed contest run) when the learner first reads it."""
    cfg = load_config(None, ["nsteps=128.0", "lr=1", "policy.hidden=[64, 64]"])
    assert cfg["nsteps"] == 128 and isinstance(cfg["nsteps"], int) and cfg["lr"] == 1
    for bad, said in (
        ("nsteps=abc", "nsteps takes a whole number"),
        ("nsteps=1.5", "nsteps takes a whole number"),
        ("lr=fast", "lr takes a number"),
        ("lr=inf", "lr takes a number"),
        ("clip_value=1", "clip_value takes true or false"),
        ("policy=mlp", "policy in ppo2.yaml (--set) is a section"),
        ("policy.hidden=64", "policy.hidden takes a list"),
    ):
        with pytest.raises(UserError, match=re.escape(said)):
            load_config(None, [bad])
    user = tmp_path / "mine.yaml"
    # the kind is the typed default's, not the value's of the moment: a key that takes a flag
    # or a word (backtracking: auto) goes back to its word after a file set the flag
    user.write_text("backtracking: true\nlr: 1e-3\n")  # YAML reads 1e-3 as a string
    cfg = load_config(user, ["backtracking=auto"])
    assert cfg["backtracking"] == "auto" and cfg["lr"] == 1e-3
    # the annotated type, where the default (None) cannot say it
    assert load_config(None, ["max_grad_norm=null"])["max_grad_norm"] is None
    from agent.configs import MAML

    assert load_config(None, ["adapt_steps=2", "inner_lr=null"], defaults=MAML)["adapt_steps"] == 2
    for bad, said in (("adapt_steps=1.5", "whole number (or null)"), ("nsteps=null", "number")):
        with pytest.raises(UserError, match=re.escape(said)):
            load_config(None, [bad], defaults=MAML)
    with pytest.raises(UserError, match="nsteps takes a whole number"):
        load_config(None, [f"nsteps={10**400}"])  # too large for a float: refused, no traceback
    user.write_text("nsteps: many\n")
    with pytest.raises(UserError, match=f"nsteps='many' in {re.escape(str(user))}"):
        load_config(user)
    user.write_text("nsteps: 128\npolicy: [a, b\n")
    with pytest.raises(UserError, match=r"not valid YAML \(line 3, column 1\)"):
        load_config(user)


def test_a_file_that_is_no_checkpoint_is_named_with_the_fix(tmp_path: Path) -> None:
    from agent.checkpoint import load_checkpoint

    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch checkpoint .* give the checkpoint.pt"):
        load_checkpoint(junk)


# --- levels and vector envs ----------------------------------------------------------------
def test_assign_levels_round_robin() -> None:
    levels = [f"G-Genesis-v0:L{i}" for i in range(5)]
    assert assign_levels(levels, 2) == [levels[0::2], levels[1::2]]
    assert assign_levels(levels[:2], 3) == [[levels[0]], [levels[1]], [levels[0]]]
    assert assign_levels(levels, 1) == [levels]
    assert level_system("SonicTheHedgehog-Genesis-v0:GreenHillZone.Act1") == "Genesis"
    assert discrete_actions("Breakout-Atari2600-v0:Start") == 18
    assert discrete_actions("Airstriker-Genesis-v0:Level1") == 7
    with pytest.raises(UserError, match="different action sets"):
        LevelEnv(["Airstriker-Genesis-v0:Level1", "Breakout-Atari2600-v0:Start"])


def test_level_env_is_lazy_and_switches_level_each_episode(atari_roms: None) -> None:
    levels = ["Breakout-Atari2600-v0:Start", "Pong-Atari2600-v0:Start"]
    env = LevelEnv(levels, seed=0)
    try:
        assert env._env is None  # no emulator until the first reset
        seen = []
        for _ in range(3):
            obs, _ = env.reset()
            assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
            seen.append(env.level)
            env.step(0)
        assert seen == [levels[0], levels[1], levels[0]]
    finally:
        env.close()


# --- python -m agent.train -----------------------------------------------------------------
def run_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_bad_input_is_one_line_error(tmp_path: Path) -> None:
    for extra, message in [
        (["--levels", "no-such-set"], "level set"),
        (["--levels", "SonicTheHedgehog-Genesis-v0:GreenHillZone.Act1"], "not imported"),
        (["--levels", "Airstriker-Genesis-v0:Level1", "--set", "nosuch=1"], "unknown config key"),
    ]:
        proc = run_train(*extra, "--timesteps", "64", "--out", str(tmp_path / "x"))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_two_levels_then_resume(tmp_path: Path, atari_roms: None) -> None:
    out = tmp_path / "run"
    common = [
        "--levels",
        "Breakout-Atari2600-v0:Start,Pong-Atari2600-v0:Start",
        "--out",
        str(out),
        "--workers",
        "2",
        "--set",
        "nsteps=32",
        "--set",
        "nminibatches=2",
        "--set",
        "noptepochs=1",
        "--set",
        "save_interval=1",
    ]
    proc = run_train(*common, "--timesteps", "128")
    assert proc.returncode == 0, proc.stderr
    data = load_checkpoint(out / "checkpoint.pt")
    assert data["timesteps"] == 128 and data["updates"] == 2
    assert data["levels"] == ["Breakout-Atari2600-v0:Start", "Pong-Atari2600-v0:Start"]
    assert data["policy_spec"]["action"] == {"type": "discrete", "n": 18}
    rows = (out / "learning.csv").read_text().splitlines()
    assert rows[0].startswith("timesteps,updates,episodes,mean_return") and len(rows) == 3

    proc = run_train(*common, "--timesteps", "192", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "from 128 to 192 steps" in proc.stdout
    data = load_checkpoint(out / "checkpoint.pt")
    assert data["timesteps"] == 192 and data["updates"] == 3
    rows = (out / "learning.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[-1].startswith("192,3,")


@pytest.mark.slow
def test_joint_ppo_alternates_two_levels_on_one_worker(tmp_path: Path, atari_roms: None) -> None:
    """Joint PPO with one worker and two levels: the worker switches level at every episode end
    (Breakout's and Qbert's random-play episodes last ~120-320 steps)."""
    out = tmp_path / "joint"
    levels = "Breakout-Atari2600-v0:Start,Qbert-Atari2600-v0:Start"
    proc = run_train(
        "--levels",
        levels,
        "--out",
        str(out),
        "--workers",
        "1",
        "--timesteps",
        "1024",
        "--set",
        "nsteps=128",
        "--set",
        "nminibatches=2",
        "--set",
        "noptepochs=1",
    )
    assert proc.returncode == 0, proc.stderr
    data = load_checkpoint(out / "checkpoint.pt")
    played = data["level_episodes"]
    breakout, qbert = played.get(levels.split(",")[0], 0), played.get(levels.split(",")[1], 0)
    assert qbert >= 1 and breakout - qbert in (0, 1), played  # B, Q, B, Q, ... in turn
    assert data["episodes"] >= 2 and "episodes started per level" in proc.stdout
    assert data["timesteps"] == 1024
