"""`python -m agent.rainbow`: the contest's Rainbow baseline, learning on the remote level.

    python -m agent.rainbow [--config FILE] [--init CHECKPOINT] [--resume] [--set key=value ...]

One environment (the contest connection), the agent-side wrappers with unscaled rewards, Rainbow
with the contest baseline's settings (agent.configs.RAINBOW: RainbowConfig in
agent/learners/rainbow.py). `--init` (or
$AGENT_CHECKPOINT, which agent images built with a checkpoint set) fine-tunes a trained Rainbow
network, e.g. joint Rainbow from `agent.train --algo rainbow`; otherwise it starts from scratch.
Every `save_interval` steps and when the server says the budget is spent, it saves
$AGENT_OUTPUT_DIR/checkpoint.pt (online and target networks, optimizer, counters, RNG states)
and exits 0. At the first episode end after every `save_interval` steps it also leaves a resume
point: the learner and the replay buffer (the part it holds, ≤ 3.5 GB at full capacity), then
`resume.json` (class ResumePoints), from which the evaluation continues a stopped run. `--resume`
continues from the resume point when there is one (learner and replay), else from checkpoint.pt
(the learner only: updates start again once the replay holds `learning_starts` new
transitions).

Runs in the agent image: imports torch, numpy, gymnasium, opencv and pyyaml, never stable-retro
or meta_train.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from agent.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from agent.config import load_config
from agent.configs import RAINBOW
from agent.connection import output_dir
from agent.learners.rainbow import Rainbow, RainbowConfig, learn, make_replay, rainbow_for_spaces
from agent.learners.replay import FrameReplay
from agent.runtime import agent_parser, checkpoint_path, contest_envs, learn_until_budget, start
from agent.train_log import TrainLogger
from sonic_common.agent_env import RESUME_FILE
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.files import write_json_atomic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = agent_parser(
        "rainbow", __doc__, "rainbow.yaml", checkpoint_help="Rainbow checkpoint to fine-tune"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the resume point in $AGENT_OUTPUT_DIR (learner and replay) when "
        "there is one, else from its checkpoint.pt (the learner)",
    )
    return parser.parse_args(argv)


def save_rainbow(
    path: Path, agent: Rainbow, cfg: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    return save_checkpoint(
        path,
        agent.online,
        config=cfg,
        optimizer=agent.optimizer,
        timesteps=agent.timesteps,
        updates=agent.updates,
        episodes=agent.episodes,
        extra={**agent.state(), **(extra or {})},
    )


class ResumePoints:
    """At the first episode end after every `save_interval` steps: the learner and its replay
    buffer, then $AGENT_OUTPUT_DIR/resume.json, last, saying where they were taken. The
    evaluation continues a stopped run from there (evaluation/contest/resume.py). Only the
    last point is kept, and none once the budget is spent."""

    def __init__(
        self, out: Path, every: int, agent: Rainbow, replay: FrameReplay, save: Any
    ) -> None:
        self.out, self.every, self.agent, self.replay, self._save = out, every, agent, replay, save
        self.episodes = agent.episodes
        self.next_at = (agent.timesteps // every + 1) * every

    def on_step(self, agent: Rainbow) -> None:
        if agent.episodes == self.episodes:
            return
        self.episodes = agent.episodes
        if agent.timesteps >= self.next_at:
            self.next_at = (agent.timesteps // self.every + 1) * self.every
            self.save()

    def save(self) -> None:
        """The new point's files under new names, then resume.json naming them, then the old
        point's files removed: a kill at any moment leaves a whole point."""
        a = self.agent
        files = {"checkpoint": f"resume-{a.timesteps}.pt", "replay": f"resume-{a.timesteps}.npz"}
        self._save(self.out / files["checkpoint"])
        self.replay.save(self.out / files["replay"])
        point = {"steps": a.timesteps, "episodes": a.episodes, **files}
        write_json_atomic(self.out / RESUME_FILE, point)
        _remove_points(self.out, keep=set(files.values()))

    def discard(self) -> None:
        """The run is over: its point (a replay buffer's worth of disk) is no longer needed."""
        (self.out / RESUME_FILE).unlink(missing_ok=True)
        _remove_points(self.out, keep=set())


def _remove_points(out: Path, keep: set[str]) -> None:
    """Every point's files but `keep`, with what a kill mid-save left (files not yet named by
    resume.json, half-written temporary files)."""
    for pattern in ("resume-*.pt", "resume-*.npz", ".resume-*.tmp"):
        for path in out.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _point_files(out: Path) -> tuple[Path, Path] | None:
    """(learner, replay) files named by resume.json, when it names two files of `out`."""
    try:
        point = json.loads((out / RESUME_FILE).read_text())
        names = [point["checkpoint"], point["replay"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        return None
    return out / names[0], out / names[1]


def _resume_files(out: Path) -> tuple[dict[str, Any], Path, Path] | None:
    """(learner, its file, the replay's file) saved at the resume point, when there is one."""
    if not (out / RESUME_FILE).is_file():
        return None
    files = _point_files(out)
    if files is None:
        raise UserError(
            f"{out / RESUME_FILE} does not name the point's files: remove it to resume from "
            f"{CHECKPOINT_NAME} instead"
        )
    point = json.loads((out / RESUME_FILE).read_text())
    saved = load_checkpoint(files[0])
    if (saved.get("timesteps"), saved.get("episodes")) != (point["steps"], point["episodes"]):
        raise UserError(
            f"{files[0]} does not match {out / RESUME_FILE}: remove {RESUME_FILE} to resume "
            f"from {CHECKPOINT_NAME} instead"
        )
    return saved, files[0], files[1]


def _starting_point(
    args: argparse.Namespace, out: Path | None
) -> tuple[dict[str, Any] | None, bool, str, Path | None]:
    """(checkpoint data, whether it is a resume, its path, the replay to load) — read before
    connecting. A resume prefers the resume point (learner and replay at an episode's end) to
    the last checkpoint.pt (the learner only)."""
    if args.resume:
        if out is None:
            raise UserError("--resume needs $AGENT_OUTPUT_DIR (where checkpoint.pt is written)")
        point = _resume_files(out)
        if point is not None:
            return point[0], True, str(point[1]), point[2]
        if (out / CHECKPOINT_NAME).is_file():
            return load_checkpoint(out / CHECKPOINT_NAME), True, str(out / CHECKPOINT_NAME), None
    init = checkpoint_path(args.init)
    return (load_checkpoint(init) if init else None), False, str(init), None


def _replay(rcfg: RainbowConfig, envs: Any, path: Path | None) -> FrameReplay:
    replay = make_replay(rcfg, tuple(envs.single_observation_space.shape), int(envs.num_envs))
    if path is not None:
        try:
            replay.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"cannot restore the replay buffer from {path}: {e}") from None
    return replay


def _connect(
    cfg: dict[str, Any],
    rcfg: RainbowConfig,
    device: torch.device,
    saved: dict[str, Any] | None,
    resuming: bool,
    source: str,
) -> tuple[Any, Rainbow]:
    """The wrapped contest connection (a vector env of 1) and the learner on its spaces."""
    envs = contest_envs(cfg)
    try:
        agent = rainbow_for_spaces(
            saved, rcfg, int(cfg["features"]), envs, device, source, resume=resuming
        )
    except UserError:
        envs.close()
        raise
    return envs, agent


def _config(args: argparse.Namespace) -> tuple[dict[str, Any], RainbowConfig]:
    cfg = load_config(args.config, args.overrides, defaults=RAINBOW)
    try:
        return cfg, RainbowConfig.from_dict(cfg)
    except ValueError as e:
        raise UserError(f"bad Rainbow config: {e}") from None


def _announce(how: str, device: torch.device, rcfg: RainbowConfig, restored: int | None) -> None:
    print(
        f"rainbow agent: {how} on {device}, capacity={rcfg.capacity} "
        f"learning_starts={rcfg.learning_starts} (the replay buffer "
        + (f"restored: {restored} transitions)" if restored is not None else "starts empty)"),
        flush=True,
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, rcfg = _config(args)
    seed, device = start(cfg)
    out = output_dir()
    saved, resuming, source, replay_file = _starting_point(args, out)

    envs, agent = _connect(cfg, rcfg, device, saved, resuming, source)
    replay = _replay(rcfg, envs, replay_file)
    init = None if resuming or saved is None else source
    logger = TrainLogger(
        out,
        tensorboard=bool(cfg["tensorboard"]),
        progress_bar=False,
        resume=resuming,
        config=cfg,
        # from a resume point: the rows logged after it were discarded with the play
        keep_rows_below=agent.timesteps + 1 if replay_file else None,
    )
    save_every = max(1, int(cfg["save_interval"]))

    def save(path: Path | None = out / CHECKPOINT_NAME if out else None) -> Path | None:
        return save_rainbow(path, agent, cfg, {"init": init}) if path else None

    points = ResumePoints(out, save_every, agent, replay, save) if out else None

    def on_step(a: Rainbow) -> None:
        if a.timesteps % save_every == 0:
            save()
        if points is not None:
            points.on_step(a)

    how = (
        "resuming " + source
        if resuming
        else "fine-tuning " + source
        if saved is not None
        else "learning from scratch"
    )
    _announce(how, device, rcfg, replay.size if replay_file else None)
    return learn_until_budget(
        "rainbow",
        agent,
        learn,
        envs=envs,
        logger=logger,
        cfg=cfg,
        seed=seed,
        save=save,
        on_step=on_step,
        replay=replay,
        finished=points.discard if points else lambda: None,
    )


if __name__ == "__main__":
    raise SystemExit(main())
