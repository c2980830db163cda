"""Rainbow: the C51 projection, n-step returns, prioritized sampling, the frame-sharing replay,
noisy layers, and the contest agent on Airstriker (budget, checkpoint, resume, fine-tuning)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from agent.checkpoint import load_checkpoint
from agent.learners.rainbow import (
    NoisyLinear,
    Rainbow,
    RainbowConfig,
    RainbowNet,
    project_distribution,
    rainbow_spec,
)
from agent.learners.replay import FrameReplay, PriorityTree
from evaluation.contest.runner import RunSpec, run_one
from roms_setup.levels import Level

ROOT = Path(__file__).resolve().parents[1]
LEVEL = Level.parse("Airstriker-Genesis-v0:Level1")
SMALL = [
    "--set",
    "learning_starts=80",
    "--set",
    "torch_threads=1",
    "--set",
    "capacity=1000",
    "--set",
    "target_interval=50",
    "--set",
    "log_interval=50",
    "--set",
    "features=64",
    "--set",
    "atoms=11",
]


# ---------------------------------------------------------------------------- projection


def test_projection_matches_a_hand_computed_case() -> None:
    support = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    probs = torch.tensor(
        [[0.1, 0.2, 0.3, 0.2, 0.2], [0.1, 0.2, 0.3, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]]
    )
    returns = torch.tensor([0.5, 5.0, -0.25])
    discounts = torch.tensor([0.5, 1.0, 0.0])
    out = project_distribution(probs, returns, discounts, support)
    # row 0: 0.5 + 0.5·z = −0.5, 0, 0.5, 1, 1.5 → halves to the neighbours, exact atoms kept
    # row 1: everything beyond v_max lands on v_max; row 2: γ = 0, all mass at −0.25
    expected = torch.tensor(
        [[0.0, 0.05, 0.4, 0.45, 0.1], [0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.25, 0.75, 0.0, 0.0]]
    )
    torch.testing.assert_close(out, expected)


# ---------------------------------------------------------------------------- replay


def filled(
    nenvs: int, steps: int, capacity: int, dones_at: set[int], n_step: int = 3, seed: int = 0
) -> tuple[FrameReplay, list[dict]]:
    """A replay and a naive record of the same steps: full stacked obs per step, like the
    agent's FrameStack (a reset repeats the first frame)."""
    rng = np.random.default_rng(seed)
    replay = FrameReplay(capacity, (3, 2), stack=4, n_step=n_step, gamma=0.9, nenvs=nenvs)
    frames = rng.integers(0, 256, (nenvs, 3, 2), dtype=np.uint8)
    stacks = np.repeat(frames[:, None], 4, axis=1)
    replay.start(frames)
    naive: list[dict] = []
    for t in range(steps):
        actions = rng.integers(0, 5, nenvs)
        rewards = rng.normal(size=nenvs).astype(np.float32)
        dones = np.array([(t * nenvs + e) in dones_at for e in range(nenvs)])
        nxt = rng.integers(0, 256, (nenvs, 3, 2), dtype=np.uint8)
        for e in range(nenvs):
            naive.append(
                {
                    "obs": stacks[e].copy(),
                    "action": actions[e],
                    "reward": rewards[e],
                    "done": dones[e],
                    "env": e,
                }
            )
        replay.add(actions, rewards, dones, nxt)
        for e in range(nenvs):
            if dones[e]:
                stacks[e] = nxt[e]
            else:
                stacks[e] = np.concatenate([stacks[e, 1:], nxt[e][None]])
    naive += [{"obs": stacks[e].copy()} for e in range(nenvs)]  # the current observations
    return replay, naive


@pytest.mark.parametrize("nenvs", [1, 2])
def test_frame_sharing_replay_returns_the_naive_observations(nenvs: int) -> None:
    steps, capacity = 60, 40  # wraps around the ring
    replay, naive = filled(nenvs, steps, capacity, dones_at={9, 10, 23, 47, 70, 71})
    live = np.flatnonzero(replay.ready)
    assert replay.size == len(live) > 0
    for slot in live:
        g = next(
            g
            for g in range(len(naive))
            if g % replay.slots == slot and g >= replay.written - replay.capacity
        )
        np.testing.assert_array_equal(replay.stacked(np.array([slot]))[0], naive[g]["obs"])
        batch_returns, discounts = replay.n_step_returns(np.array([slot]))
        if discounts[0] > 0:  # the next observation is the one n steps later, same env
            nxt = replay.stacked(np.array([slot + 3 * nenvs]))[0]
            np.testing.assert_array_equal(nxt, naive[g + 3 * nenvs]["obs"])


@pytest.mark.parametrize(("steps", "capacity"), [(30, 200), (60, 40)])  # part-filled, wrapped
def test_a_saved_replay_restores_what_it_samples_and_how_it_goes_on(
    tmp_path: Path, steps: int, capacity: int
) -> None:
    # two environments, one of them mid-episode: their pending n-step windows differ in length
    replay, _ = filled(2, steps, capacity, dones_at={9, 23, 29, 47})
    replay.update_priorities(np.array([4, 6]), np.array([3.0, 0.5]))
    replay.save(tmp_path / "replay.npz")
    restored = FrameReplay(capacity, (3, 2), stack=4, n_step=3, gamma=0.9, nenvs=2)
    restored.load(tmp_path / "replay.npz")
    assert (restored.written, restored.size, restored.max_error) == (
        replay.written,
        replay.size,
        replay.max_error,
    )
    a, b = (
        replay.sample(16, np.random.default_rng(3)),
        restored.sample(16, np.random.default_rng(3)),
    )
    for name in ("slots", "obs", "actions", "returns", "discounts", "next_obs", "weights"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    frames = np.full((2, 3, 2), 7, np.uint8)
    for _ in range(4):  # the same transitions become ready on both
        step = (np.array([1, 2]), np.array([0.5, 1.0]), np.array([False, False]), frames)
        np.testing.assert_array_equal(replay.add(*step), restored.add(*step))
    other = FrameReplay(capacity + 1, (3, 2), stack=4, n_step=3, gamma=0.9, nenvs=2)
    with pytest.raises(ValueError, match="is not this buffer"):
        other.load(tmp_path / "replay.npz")
    data = (tmp_path / "replay.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])  # a file cut short
    with pytest.raises((zipfile.BadZipFile, EOFError, ValueError)):
        restored.load(tmp_path / "cut.npz")


def test_n_step_returns_stop_at_an_episode_end() -> None:
    replay = FrameReplay(100, (1, 1), stack=4, n_step=3, gamma=0.5)
    replay.start(np.zeros((1, 1, 1), np.uint8))
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    for t, r in enumerate(rewards):
        ready = replay.add(
            np.array([0]), np.array([r]), np.array([t == 3]), np.zeros((1, 1, 1), np.uint8)
        )
        if t == 3:  # the episode end makes the pending transitions sampleable at once
            assert list(ready) == [1, 2, 3]
    assert replay.size == 4  # t=4 and t=5 wait for their third step
    returns, discounts = replay.n_step_returns(np.arange(4))
    # t=0: 1 + 0.5·2 + 0.25·4, bootstrapped with γ³; t=1: 2 + 0.5·4 + 0.25·8, ends at t=3
    np.testing.assert_allclose(returns, [3.0, 6.0, 8.0, 8.0])
    np.testing.assert_allclose(discounts, [0.125, 0.0, 0.0, 0.0])


def test_prioritized_sampling_proportions_and_importance_weights() -> None:
    replay = FrameReplay(
        100, (1, 1), stack=4, n_step=1, gamma=0.9, alpha=0.5, beta=0.4, epsilon=0.1
    )
    replay.start(np.zeros((1, 1, 1), np.uint8))
    for _ in range(4):
        replay.add(np.array([0]), np.array([0.0]), np.array([False]), np.zeros((1, 1, 1), np.uint8))
    assert replay.size == 4
    errors = np.array([0.0, 0.5, 1.5, 3.9])
    replay.update_priorities(np.arange(4), errors)
    priorities = (errors + 0.1) ** 0.5
    probs = priorities / priorities.sum()
    batch = replay.sample(40_000, np.random.default_rng(0))
    freq = np.bincount(batch.slots, minlength=4) / len(batch.slots)
    np.testing.assert_allclose(freq, probs, atol=0.01)
    expected_w = (probs * 4) ** -0.4 / (probs.min() * 4) ** -0.4
    np.testing.assert_allclose(batch.weights, expected_w[batch.slots], rtol=1e-5)
    assert batch.weights.max() <= 1.0
    # a new transition enters with the largest error seen so far
    replay.add(np.array([0]), np.array([0.0]), np.array([False]), np.zeros((1, 1, 1), np.uint8))
    assert replay.tree[np.array([4])][0] == pytest.approx((3.9 + 0.1) ** 0.5)


def test_priority_tree_never_finds_a_slot_past_its_size() -> None:
    """A draw at the top of [0, total), or past it by rounding in the sums, must land on a real
    slot (the replay then redraws if it is empty), never on the zero leaves that pad the tree to
    a power of two (5 slots: 8 leaves)."""
    tree = PriorityTree(5)
    tree.set(np.arange(3), np.array([0.3, 0.2, 0.5]))
    edge = np.array([tree.total, np.nextafter(tree.total, np.inf), 2 * tree.total])
    assert (tree.find(edge) < 5).all()
    assert list(tree.find(np.array([0.0, 0.31, 0.51]))) == [0, 1, 2]


# ---------------------------------------------------------------------------- network


def test_noisy_layer_resamples_and_matches_the_explicit_weights() -> None:
    torch.manual_seed(0)
    layer = NoisyLinear(6, 4, sigma0=0.5)
    x = torch.randn(3, 6)
    assert not torch.allclose(layer(x), layer(x))  # fresh noise on every call
    noise = layer.sample_noise()
    eps_in, eps_out, eps_b = noise
    weight = layer.weight_mu + layer.weight_sigma * torch.outer(eps_out, eps_in)
    bias = layer.bias_mu + layer.bias_sigma * eps_b
    torch.testing.assert_close(layer(x, noise), x @ weight.T + bias)
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    torch.testing.assert_close(layer(x), a)


def test_training_call_first_convolution_in_blocks_matches_the_strided_one() -> None:
    # with gradients the first convolution runs over 4×4 pixel blocks: the same outputs and
    # gradients as the plain strided convolution
    cfg = RainbowConfig(atoms=11, v_min=-10, v_max=10)
    net = RainbowNet(rainbow_spec((4, 36, 36), 3, cfg, features=16))
    obs = torch.randint(0, 255, (2, 4, 36, 36), dtype=torch.uint8)
    conv = net.convs[0]
    torch.manual_seed(1)
    blocks = net(obs)
    grad_blocks = torch.autograd.grad(blocks.exp().pow(2).sum(), [conv.weight, conv.bias])
    torch.manual_seed(1)
    plain_first = torch.nn.functional.conv2d(obs.float() / 255.0, conv.weight, conv.bias, 4)
    h = torch.nn.functional.relu(net.fc(net.convs[2:](torch.relu(plain_first))))
    adv = net.advantage(h).view(-1, 3, 11)
    plain = torch.log_softmax(net.value(h).view(-1, 1, 11) + adv - adv.mean(1, keepdim=True), -1)
    torch.testing.assert_close(blocks, plain)  # float32: the sums run in another order
    grad_plain = torch.autograd.grad(plain.exp().pow(2).sum(), [conv.weight, conv.bias])
    for a, b in zip(grad_blocks, grad_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rainbow_net_outputs_distributions_over_the_support() -> None:
    cfg = RainbowConfig(atoms=11, v_min=-10, v_max=10)
    net = RainbowNet(rainbow_spec((4, 84, 84), 7, cfg, features=32))
    log_probs = net(torch.randint(0, 255, (2, 4, 84, 84), dtype=torch.uint8))
    assert log_probs.shape == (2, 7, 11)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 7))
    assert net.q_values(log_probs).abs().max() <= 10


def test_update_moves_the_online_network_towards_the_target() -> None:
    torch.manual_seed(0)
    cfg = RainbowConfig(atoms=11, v_min=-10, v_max=10, capacity=200, learning_starts=0, lr=1e-3)
    agent = Rainbow(RainbowNet(rainbow_spec((4, 36, 36), 2, cfg, features=16)), cfg)
    replay = FrameReplay(200, (36, 36), stack=4, n_step=3, gamma=cfg.gamma)
    rng = np.random.default_rng(0)
    replay.start(np.zeros((1, 36, 36), np.uint8))
    for t in range(100):
        replay.add(
            np.array([t % 2]),
            np.array([1.0]),
            np.array([t % 10 == 9]),
            np.zeros((1, 36, 36), np.uint8),
        )
    obs = torch.zeros(1, 4, 36, 36, dtype=torch.uint8)
    with torch.no_grad():
        before = agent.online.q_values(agent.online(obs)).mean()
    for _ in range(150):
        agent.update(replay, rng)
    with torch.no_grad():
        after = agent.online.q_values(agent.online(obs)).mean()
    # every reward is 1: the 3-step returns are 1 to 2.97, the initial estimates near 0
    assert abs(float(before)) < 0.5 and float(after) > 0.8, (before, after)
    assert agent.updates == 150


# ---------------------------------------------------------------------------- contest agent


def test_rainbow_imports_neither_stable_retro_nor_meta_train() -> None:
    code = (
        "import sys, agent.rainbow; "
        "print(sorted(m for m in ('stable_retro', 'meta_train', 'retro') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_rainbow_agent_to_the_budget_then_resumed(tmp_path: Path) -> None:
    run = tmp_path / "scratch"
    results = run_one(
        RunSpec(agent="rainbow", level=LEVEL, seed=1, budget=100, results_dir=run, agent_args=SMALL)
    )
    log = (run / "agent.log").read_text()
    assert results["status"] == "budget" and results["agent_exit_code"] == 0, log
    assert results["timesteps"] == 100 and "budget spent after" in log
    first = load_checkpoint(run / "agent" / "checkpoint.pt")
    # 100 = steps + resets; a transition enters the replay 2 steps late (3-step) unless its
    # episode ended; one update per transition from the 80th on
    assert 99 - first["episodes"] <= first["timesteps"] <= 99
    assert first["timesteps"] - 2 <= first["transitions"] <= first["timesteps"]
    assert first["updates"] == first["transitions"] - 79 > 0
    assert first["policy_spec"]["kind"] == "rainbow" and first["policy_spec"]["n_actions"] == 7
    assert "target_state" in first and first["optimizer"]["state"]

    # an agent restarted within its run finds its checkpoint in $AGENT_OUTPUT_DIR
    resumed_dir = tmp_path / "resumed"
    restart = (
        f'cp {run / "agent" / "checkpoint.pt"} "$AGENT_OUTPUT_DIR/checkpoint.pt" && '
        f'exec {sys.executable} -m agent.rainbow "$@"'
    )
    results = run_one(
        RunSpec(
            agent="rainbow",
            level=LEVEL,
            seed=1,
            budget=100,
            results_dir=resumed_dir,
            agent_cmd=["sh", "-c", restart, "sh"],
            agent_args=[*SMALL, "--resume"],
        )
    )
    log = (resumed_dir / "agent.log").read_text()
    assert results["status"] == "budget" and "resuming" in log, log
    resumed = load_checkpoint(resumed_dir / "agent" / "checkpoint.pt")
    new_steps = resumed["timesteps"] - first["timesteps"]
    new_transitions = resumed["transitions"] - first["transitions"]
    assert 90 <= new_steps <= 99 and new_steps - 2 <= new_transitions <= new_steps
    # the replay starts empty: updates resume once it holds learning_starts transitions again
    assert resumed["updates"] == first["updates"] + new_transitions - 79
    assert resumed["episodes"] >= first["episodes"]


def test_joint_rainbow_then_fine_tuned_in_the_contest(tmp_path: Path) -> None:
    """agent.train --algo rainbow on 2 lockstep workers, resumed, then agent.rainbow --init."""
    out = tmp_path / "joint"
    train = [
        sys.executable,
        "-m",
        "agent.train",
        "--algo",
        "rainbow",
        "--levels",
        str(LEVEL),
        "--workers",
        "2",
        "--out",
        str(out),
        *SMALL,
        "--set",
        "tensorboard=false",
    ]
    proc = subprocess.run(
        [*train, "--timesteps", "100"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    first = load_checkpoint(out / "checkpoint.pt")
    assert first["timesteps"] == 100 and first["levels"] == [str(LEVEL)]
    assert first["updates"] == first["transitions"] - 79 > 0
    proc = subprocess.run(
        [*train, "--timesteps", "120", "--resume"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "from 100 to 120 steps" in proc.stdout, proc.stderr
    assert load_checkpoint(out / "checkpoint.pt")["timesteps"] == 120
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.train",
            "--algo",
            "ppo",
            "--levels",
            str(LEVEL),
            "--out",
            str(out),
            "--timesteps",
            "200",
            "--resume",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "trained with --algo rainbow" in proc.stderr

    results = run_one(
        RunSpec(
            agent="rainbow",
            level=LEVEL,
            seed=2,
            budget=30,
            results_dir=tmp_path / "tuned",
            agent_args=[*SMALL, "--init", str(out / "checkpoint.pt")],
        )
    )
    log = (tmp_path / "tuned" / "agent.log").read_text()
    assert results["status"] == "budget" and "fine-tuning" in log, log
    tuned = load_checkpoint(tmp_path / "tuned" / "agent" / "checkpoint.pt")
    assert 20 <= tuned["timesteps"] <= 29 and tuned["init"] == str(out / "checkpoint.pt")


def test_resume_restores_the_learner(tmp_path: Path) -> None:
    from agent.rainbow import save_rainbow

    torch.manual_seed(0)
    cfg = RainbowConfig(atoms=11, capacity=200, learning_starts=0)
    spec = rainbow_spec((4, 36, 36), 3, cfg, features=16)
    agent = Rainbow(RainbowNet(spec), cfg)
    replay = FrameReplay(200, (36, 36), stack=4, n_step=3, gamma=cfg.gamma)
    replay.start(np.zeros((1, 36, 36), np.uint8))
    for t in range(30):
        replay.add(
            np.array([t % 3]), np.array([1.0]), np.array([False]), np.full((1, 36, 36), t, np.uint8)
        )
    for _ in range(5):
        agent.update(replay, np.random.default_rng(0))
    agent.sync_target()
    agent.update(replay, np.random.default_rng(1))  # online and target now differ
    agent.timesteps, agent.transitions, agent.episodes = 30, 28, 2
    path = save_rainbow(tmp_path / "checkpoint.pt", agent, {"atoms": 11})
    restored = Rainbow(RainbowNet(spec), cfg)
    restored.load(load_checkpoint(path))
    for name in ("online", "target"):
        for (k, a), b in zip(
            getattr(agent, name).state_dict().items(),
            getattr(restored, name).state_dict().values(),
            strict=True,
        ):
            torch.testing.assert_close(a, b, msg=f"{name}.{k}")
    assert (restored.timesteps, restored.transitions, restored.updates, restored.episodes) == (
        30,
        28,
        6,
        2,
    )
    step = restored.optimizer.state_dict()["state"][0]["step"]
    assert float(step) == 6.0
    # a PPO agent refuses it in one line
    from gymnasium import spaces

    from agent.checkpoint import policy_for_spaces
    from sonic_common.errors import UserError

    with pytest.raises(UserError, match="holds a rainbow network"):
        policy_for_spaces(
            load_checkpoint(path),
            {},
            spaces.Box(0, 255, (4, 36, 36), np.uint8),
            spaces.Discrete(3),
            str(path),
        )


def test_rainbow_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.rainbow", "--set", "atom=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown config key 'atom'")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.rainbow", "--set", "capacity=10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: bad Rainbow config: capacity must be at least 1000 transitions, not 10"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agent.rainbow", "--init", str(tmp_path / "x")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: checkpoint")
    assert "Traceback" not in proc.stderr


def test_pipeline_configs_list_rainbow_with_its_settings(tmp_path: Path) -> None:
    from meta_train.pipeline import CONFIG_DIR, Pipeline, load_pipeline_config, suite_command

    sonic = load_pipeline_config(CONFIG_DIR / "pipeline-sonic.yaml")
    assert "rainbow" in sonic["suite"]["agents"]
    cmd = suite_command(Pipeline(tmp_path, sonic, CONFIG_DIR / "pipeline-sonic.yaml"), "docker")
    assert "rainbow" in cmd[cmd.index("--agents") + 1].split(",")
    atari = load_pipeline_config(CONFIG_DIR / "pipeline-atari.yaml")
    atari["suite"]["agents"] = [*atari["suite"]["agents"], "rainbow"]
    cmd = suite_command(
        Pipeline(tmp_path / "a", atari, CONFIG_DIR / "pipeline-atari.yaml"), "local"
    )
    args = cmd[cmd.index("--agent-args", cmd.index("--agents")) :]
    assert any(a.startswith("rainbow=--set learning_starts=2000") for a in args), cmd


# ---------------------------------------------------------------------------- learning


class CueChain(gym.Env[np.ndarray, int]):
    """A five-step episode on 36×36 frames. The first frame lights the left or the right half
    (the cue); the first action earns 1 at the episode's last step if it names the lit half.
    Later frames light the top half if it did, the bottom if not, so the first step's value
    reaches it only by bootstrapping: its 3-step return is 0, then γ³ times the value 3 steps on."""

    observation_space = gym.spaces.Box(0, 255, (36, 36), np.uint8)
    action_space = gym.spaces.Discrete(2)
    length = 5

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t, self.cue, self.right = 0, int(self.np_random.integers(2)), False
        return self.frame(), {}

    def frame(self) -> np.ndarray:
        f = np.zeros((36, 36), np.uint8)
        if self.t == 0:
            f[:, 18 * self.cue : 18 * (self.cue + 1)] = 255
        else:
            f[0:18] = 255 if self.right else 0
            f[18:36] = 0 if self.right else 255
        return f

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.t == 0:
            self.right = int(action) == self.cue
        self.t += 1
        done = self.t == self.length
        return self.frame(), float(done and self.right), done, False, {}


@pytest.mark.slow
def test_rainbow_learns_a_cue_whose_reward_comes_four_steps_later() -> None:
    """The whole learner (replay alignment of frames, actions and rewards; 3-step returns; the
    target network's bootstrap; the projection; the KL loss; priorities) on a task a random
    policy solves half the time: after 1000 steps (800 updates) the greedy first action names
    the cue. (With the batch's actions shuffled, it named it 11 times in 40.)"""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from agent.learners.rainbow import learn
    from sonic_common.devices import torch_threads

    def make() -> gym.Env[np.ndarray, int]:
        return gym.wrappers.RecordEpisodeStatistics(
            gym.wrappers.FrameStackObservation(CueChain(), 4)
        )

    envs = SyncVectorEnv([make], autoreset_mode=AutoresetMode.SAME_STEP)
    torch.manual_seed(0)
    cfg = RainbowConfig(
        atoms=11,
        v_min=-1.0,
        v_max=2.0,
        gamma=0.9,
        capacity=2000,
        learning_starts=200,
        target_interval=100,
        lr=1e-3,
    )
    agent = Rainbow(RainbowNet(rainbow_spec((4, 36, 36), 2, cfg, features=32)), cfg)
    env, named = make(), 0
    with torch_threads(1):  # batch 32: a second thread is many times slower on a busy machine
        learn(agent, envs, total_timesteps=1000, seed=0)
        for k in range(40):
            obs, _ = env.reset(seed=1000 + k)
            named += int(agent.act(obs[None])[0]) == env.unwrapped.cue  # type: ignore[attr-defined]
    assert named >= 36, f"the greedy first action named the cue {named} times in 40"
