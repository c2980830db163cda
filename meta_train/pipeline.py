"""`python -m meta_train.pipeline`: the whole job in one command, from ROMs to a report.

    python -m meta_train.pipeline [--out runs/pipeline] [--runtime auto|docker|local]
        [--sonic | --smoke | --config FILE] [--fresh] [--backend local|ray [--address ADDR]]
        [--seeds K|3,4,5] [--device auto|cpu|cuda]

Stages, each a command of its own (shown as it starts, so any stage can be rerun by hand):

1. `roms`   `python -m roms_setup import --bundled`; with `--sonic`, a check that the Sonic
            levels are playable (import them first with `python -m roms_setup import PATH`).
2. `maml`   `python -m meta_train --config ... --out OUT/maml --resume`: MAML on train_levels;
   `reptile` the same with `--meta-optimizer reptile` into OUT/reptile, when suite.agents lists
            `reptile` (first-order Reptile, the cheap comparison).
3. `joint`  `python -m agent.train --levels ... --out OUT/joint --resume`: joint PPO.
   `joint_rainbow` the same with `--algo rainbow` into OUT/joint_rainbow, when suite.agents
            lists `joint_rainbow` (the paper's joint Rainbow; the config's joint_rainbow section).
4. `images` with Docker (`--runtime docker`, or `auto` when `evaluation docker up` can have a
            daemon): `evaluation build` of the maml, reptile, joint and joint_rainbow images
            with their checkpoints baked in, and of the other agents suite.agents lists (ppo2,
            rainbow, jerk, random). Without Docker the agents run as local processes, and it
            says so.
5. `suite`  `python -m evaluation suite` on test_levels, the agents suite.agents lists: maml
            (agent.maml with the meta-trained checkpoint), reptile (agent.maml with Reptile's),
            joint (agent.ppo2 --checkpoint with joint PPO's), joint_rainbow (agent.rainbow
            --checkpoint with joint Rainbow's), ppo2, rainbow, jerk and random.
6. `report` OUT/report.md: what ran, how long each stage took, meta-training and
            joint-training curves (OUT/*.png), and the suite's normalized IQM and mean with
            intervals, its figures and the probability of improvement over ppo2
            (OUT/suite/report.md: the rest).

The configs are meta_train/configs/pipeline-atari.yaml (default, ROM-free), pipeline-sonic.yaml
(`--sonic`: sonic-train → sonic-validation at the contest's budget) and pipeline-smoke.yaml
(`--smoke`, CI). Rerunning the same command resumes: a finished stage is skipped, an unfinished
one resumes from its own checkpoint (OUT/pipeline.json records the stages). `--fresh` starts over.
An OUT belongs to its inputs: the pipeline config, the MAML config it names as meta-training reads
it, the PPO2 and MAML agents' settings (and Rainbow's when joint_rainbow is listed), and the
levels of its level sets; with another of any, the command refuses OUT, naming which (`--fresh`,
or another OUT).
`--seeds` replaces the config's suite.seeds; more seeds than a finished run had extend its suite
(only the new runs are run, and the report is written again).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.config import find_config, parse_device, read_yaml
from evaluation.suites.seeds import parse_seeds, seeds_arg
from meta_train.configs import CONFIG_DIR
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.files import write_atomic

STATE = "pipeline.json"
STAGES = ("roms", "maml", "reptile", "joint", "joint_rainbow", "images", "suite", "report")
KNOWN_AGENTS = ("maml", "reptile", "joint", "joint_rainbow", "ppo2", "rainbow", "jerk", "random")
IMAGE_TAGS = {
    "maml": "sonic-maml-pipeline-maml:latest",
    "reptile": "sonic-maml-pipeline-reptile:latest",
    "joint": "sonic-maml-pipeline-joint:latest",
    "joint_rainbow": "sonic-maml-pipeline-joint-rainbow:latest",
}
# agent name in the suite → (agent program, checkpoint stage, option naming the checkpoint)
CHECKPOINT_AGENTS = {
    "maml": ("maml", "maml", "--checkpoint"),
    "reptile": ("maml", "reptile", "--checkpoint"),
    "joint": ("ppo2", "joint", "--checkpoint"),
    "joint_rainbow": ("rainbow", "joint_rainbow", "--checkpoint"),
}
# the joint-training stages: stage (and config section) → agent.train's --algo, and what it is
JOINT_STAGES = {"joint": ("ppo", "joint PPO"), "joint_rainbow": ("rainbow", "joint Rainbow")}
PRESETS = {
    "default": "pipeline-atari.yaml",
    "sonic": "pipeline-sonic.yaml",
    "smoke": "pipeline-smoke.yaml",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m meta_train.pipeline", description=__doc__.splitlines()[0]
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--config", help="a pipeline YAML (default: pipeline-atari.yaml)")
    which.add_argument(
        "--sonic",
        action="store_true",
        help="sonic-train → sonic-validation at the contest's budget (needs ROMs)",
    )
    which.add_argument("--smoke", action="store_true", help="the smallest run of every stage")
    p.add_argument("--out", default="runs/pipeline", help="output directory")
    p.add_argument(
        "--runtime",
        choices=("auto", "docker", "local"),
        default="auto",
        help="where agents run: docker, local processes, or docker when available",
    )
    p.add_argument("--fresh", action="store_true", help="delete OUT and start over")
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="meta-training rollouts and suite runs here, or on a Ray cluster",
    )
    p.add_argument("--address", help="ray: the cluster to join (see docs/cluster.md)")
    p.add_argument(
        "--device",
        type=parse_device,
        metavar="auto|cpu|cuda",
        help="where the training stages (maml, reptile, joint, joint_rainbow) run torch (default: "
        "their configs' device, auto); the suite's agents pick their own",
    )
    p.add_argument(
        "--seeds",
        help="the suite's seeds, instead of the config's suite.seeds: a "
        "count (3) or a list (3,4,5); more than a finished run had extends its suite",
    )
    return p.parse_args(argv)


def config_path(args: argparse.Namespace) -> Path:
    if args.config:
        return find_config(args.config, CONFIG_DIR)
    return CONFIG_DIR / PRESETS["sonic" if args.sonic else "smoke" if args.smoke else "default"]


def load_pipeline_config(path: Path) -> dict[str, Any]:
    cfg = read_yaml(path)
    required = {
        "train_levels": (),
        "test_levels": (),
        "maml": ("config",),
        "joint": ("timesteps", "envs"),
        "suite": ("agents", "seeds", "budget", "wallclock", "workers"),
    }
    for key, inner in required.items():
        if key not in cfg:
            raise UserError(f"{path} has no {key!r}: see meta_train/configs/pipeline-atari.yaml")
        missing = [k for k in inner if not isinstance(cfg[key], dict) or k not in cfg[key]]
        if missing:
            raise UserError(
                f"{path}: {key} has no {', '.join(missing)}: see "
                "meta_train/configs/pipeline-atari.yaml"
            )
    cfg["suite"]["seeds"] = parse_seeds(cfg["suite"]["seeds"])
    unknown = [a for a in cfg["suite"]["agents"] if a not in KNOWN_AGENTS]
    if unknown:
        raise UserError(
            f"{path}: unknown agent(s) {', '.join(unknown)} in suite.agents: "
            f"choose from {', '.join(KNOWN_AGENTS)}"
        )
    twice = sorted({a for a in cfg["suite"]["agents"] if cfg["suite"]["agents"].count(a) > 1})
    if twice:
        raise UserError(f"{path}: suite.agents names {', '.join(twice)} twice: list each once")
    check_joint_rainbow(cfg, path)
    check_values(cfg, path)
    return cfg


def check_joint_rainbow(cfg: dict[str, Any], path: Path) -> None:
    """The joint_rainbow section: optional (needed when suite.agents lists joint_rainbow);
    when given, with its timesteps and envs."""
    section = cfg.get("joint_rainbow")
    if section is None:
        cfg.pop("joint_rainbow", None)  # `joint_rainbow:` with nothing under it: absent
        if "joint_rainbow" in cfg["suite"]["agents"]:
            raise UserError(
                f"{path}: suite.agents lists joint_rainbow but there is no joint_rainbow "
                "section (timesteps, envs, set): see meta_train/configs/pipeline-sonic.yaml"
            )
        return
    given = section if isinstance(section, dict) else {}
    missing = [k for k in ("timesteps", "envs") if k not in given]
    if missing:
        raise UserError(
            f"{path}: joint_rainbow has no {', '.join(missing)}: see "
            "meta_train/configs/pipeline-sonic.yaml"
        )


# every key a pipeline config may hold, by section (None: the top level)
CONFIG_KEYS = {
    None: {"train_levels", "test_levels", "maml", "joint", "joint_rainbow", "suite"},
    "maml": {"config", "set"},
    "joint": {"timesteps", "envs", "set"},
    "joint_rainbow": {"timesteps", "envs", "set"},
    "suite": {"agents", "seeds", "budget", "wallclock", "workers", "record"}
    | {"ppo_set", "maml_set", "rainbow_set"},
}
COUNTS = (
    ("joint", "timesteps"),
    ("joint", "envs"),
    ("joint_rainbow", "timesteps"),
    ("joint_rainbow", "envs"),
    ("suite", "budget"),
    ("suite", "workers"),
)
SET_KEYS = (
    ("maml", "set"),
    ("joint", "set"),
    ("joint_rainbow", "set"),
    ("suite", "ppo_set"),
    ("suite", "maml_set"),
    ("suite", "rainbow_set"),
)


def check_values(cfg: dict[str, Any], path: Path) -> None:
    """What would fail a stage hours in, refused when the pipeline starts: an unknown key, a
    count that is not a whole number ≥ 1, an agent setting its agent does not have."""
    for section, known in CONFIG_KEYS.items():
        if section is not None and section not in cfg:  # an optional section (joint_rainbow)
            continue
        given = cfg if section is None else cfg[section]
        extra = sorted(set(given) - known)
        if extra:
            where = f"{section}." if section else ""
            raise UserError(
                f"{path}: unknown key(s) {', '.join(where + k for k in extra)}: "
                f"known: {', '.join(sorted(known))}"
            )
    for section, key in COUNTS:
        if section not in cfg:
            continue
        value = cfg[section][key]
        if isinstance(value, float) and value.is_integer():
            value = cfg[section][key] = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{path}: {section}.{key} is {value!r}: give a whole number ≥ 1")
    wallclock = cfg["suite"]["wallclock"]
    if isinstance(wallclock, bool) or not isinstance(wallclock, int | float):
        wallclock = math.nan
    if not (math.isfinite(wallclock) and wallclock > 0):
        raise UserError(
            f"{path}: suite.wallclock is {cfg['suite']['wallclock']!r}: give seconds above 0"
        )
    check_agent_sets(cfg, path)


def check_agent_sets(cfg: dict[str, Any], path: Path) -> None:
    """The `set` lists against the settings of the agents that get them (suite_command: maml
    and reptile get ppo_set and maml_set; joint PPO, joint.set and ppo_set; rainbow and joint
    Rainbow's fine-tuning, rainbow_set; joint Rainbow's training, joint_rainbow.set)."""
    from agent.config import load_config
    from agent.configs import MAML, PPO2, RAINBOW

    sets: dict[str, list[str]] = {}
    for section, key in SET_KEYS:
        items = (cfg[section].get(key) or []) if section in cfg else []
        if not isinstance(items, list):
            raise UserError(f"{path}: {section}.{key} is {items!r}: give a list, e.g. [a=1]")
        sets[f"{section}.{key}"] = [str(x) for x in items]
    checks: list[tuple[tuple[str, ...], Any]] = [(("joint.set",), PPO2), (("suite.ppo_set",), PPO2)]
    checks += [(("suite.rainbow_set",), RAINBOW), (("joint_rainbow.set",), RAINBOW)]
    if {"maml", "reptile"} & set(cfg["suite"]["agents"]):
        checks.append((("suite.ppo_set", "suite.maml_set"), MAML))
    for names, defaults in checks:
        try:
            load_config(None, [x for name in names for x in sets[name]], defaults=defaults)
        except UserError as e:
            raise UserError(f"{path}: {' + '.join(names)} for {defaults.name}: {e}") from None
    check_fine_tuning_fits(cfg, sets, path)


# a jointly trained network and the settings that fine-tune it: (agent, training's set, the
# suite's set, the program whose defaults both take)
FINE_TUNED = (
    ("joint", "joint.set", "suite.ppo_set", "ppo2"),
    ("joint_rainbow", "joint_rainbow.set", "suite.rainbow_set", "rainbow"),
)


def check_fine_tuning_fits(cfg: dict[str, Any], sets: dict[str, list[str]], path: Path) -> None:
    """A listed fine-tuned agent's network must fit the actions it is fine-tuned with: the same
    discretizer in training and in the suite (else every run fails after the training)."""
    from agent.config import load_config
    from agent.configs import PPO2, RAINBOW

    defaults = {"ppo2": PPO2, "rainbow": RAINBOW}
    for name, trained, tuned, program in FINE_TUNED:
        if name not in cfg["suite"]["agents"]:
            continue
        given = [
            load_config(None, sets[key], defaults=defaults[program])["discretizer"]
            for key in (trained, tuned)
        ]
        if given[0] != given[1]:
            raise UserError(
                f"{path}: {trained} trains {name} with discretizer={given[0]} but "
                f"{tuned} fine-tunes it with discretizer={given[1]}: its network's actions "
                "would not fit; give both the same discretizer"
            )


def maml_config_file(cfg: dict[str, Any]) -> Path:
    return find_config(str(cfg["maml"]["config"]), CONFIG_DIR)


# ---------------------------------------------------------------------------------- state


def pipeline_inputs(cfg: dict[str, Any]) -> dict[str, str]:
    """What a pipeline's results come from, each part's digest: its config (seeds aside: more
    seeds extend the suite and keep its runs), the MAML config it names as meta-training reads
    it (file, `maml.set` and the code's defaults), the PPO2 and MAML agents' settings (joint
    PPO, ppo2 and maml run them; Rainbow's too when joint Rainbow is trained), and the levels
    its level sets hold, which can change under the same names."""
    from agent.config import load_config
    from agent.configs import PPO2, RAINBOW, maml_defaults
    from meta_train.configs import DEFAULTS
    from roms_setup.levels import resolve_levels

    maml_set = [f"task.levels={cfg['train_levels']}", *map(str, cfg["maml"].get("set") or [])]
    settings = {"ppo2": PPO2.as_dict(), "maml": maml_defaults()}
    if "joint_rainbow" in cfg["suite"]["agents"]:  # only then: earlier OUTs keep their digest
        settings["rainbow"] = RAINBOW.as_dict()
    parts = {
        "pipeline config": {
            **cfg,
            "suite": {k: v for k, v in cfg["suite"].items() if k != "seeds"},
        },
        "MAML config": load_config(maml_config_file(cfg), maml_set, defaults=DEFAULTS),
        "agent settings": settings,
        "level sets": {
            key: [str(level) for level in resolve_levels(str(cfg[key]))]
            for key in ("train_levels", "test_levels")
        },
    }
    return {k: digest_of(v) for k, v in parts.items()}


def digest_of(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Pipeline:
    backend: list[str] = []  # --backend/--address for the maml, reptile and suite stages
    device: list[str] = []  # --device for the training stages

    def __init__(self, out: Path, cfg: dict[str, Any], cfg_file: Path) -> None:
        self.out, self.cfg, self.cfg_file = out, cfg, cfg_file
        inputs = pipeline_inputs(cfg)
        self.state: dict[str, Any] = {"config": str(cfg_file), "inputs": inputs, "stages": {}}
        path = out / STATE
        if path.is_file():
            saved = json.loads(path.read_text())
            if "inputs" not in saved:
                raise UserError(
                    f"{out} was made by an earlier version of this pipeline, which did not "
                    "record its inputs: use another --out, or --fresh"
                )
            changed = [k for k in inputs if saved["inputs"].get(k) != inputs[k]]
            if changed:
                raise UserError(
                    f"{out} was made from another {' and '.join(changed)} (then "
                    f"{saved.get('config')}): use another --out, or --fresh"
                )
            self.state = saved

    def save(self) -> None:
        write_atomic(self.out / STATE, json.dumps(self.state, indent=2) + "\n")

    def done(self, stage: str) -> bool:
        return self.state["stages"].get(stage, {}).get("status") == "done"

    def record(self, stage: str, seconds: float, **info: Any) -> None:
        self.state["stages"][stage] = {"status": "done", "seconds": round(seconds, 1), **info}
        self.save()


def py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def run_command(cmd: list[str], what: str) -> None:
    print(f"$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode == 130:
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise UserError(
            f"{what} failed (exit {proc.returncode}); its output is above. Fix it "
            "and rerun the same command: finished stages are kept"
        )


def banner(stage: str, text: str) -> None:
    print(f"\n== {stage}: {text}", flush=True)


# ---------------------------------------------------------------------------------- stages


def stage_roms(p: Pipeline, sonic: bool) -> dict[str, Any]:
    from roms_setup.installed import require_playable
    from roms_setup.levels import resolve_levels

    if not sonic:
        run_command(py("roms_setup", "import", "--bundled"), "importing the bundled games")
    for key in ("train_levels", "test_levels"):
        for level in resolve_levels(str(p.cfg[key])):
            require_playable(level)
    return {}


def maml_command(p: Pipeline, name: str) -> list[str]:
    cmd = py(
        "meta_train",
        "--config",
        str(maml_config_file(p.cfg)),
        "--out",
        str(p.out / name),
        "--resume",
        "--set",
        f"task.levels={p.cfg['train_levels']}",
    )
    if name == "reptile":
        cmd += ["--meta-optimizer", "reptile", "--set", "learn_inner_lr=false"]
    for item in p.cfg["maml"].get("set") or []:
        cmd += ["--set", str(item)]
    return cmd + p.backend + p.device


def joint_command(p: Pipeline, stage: str = "joint") -> list[str]:
    """agent.train over train_levels for a joint-training stage (joint: PPO, joint_rainbow:
    Rainbow), with that config section's timesteps, envs and set."""
    j = p.cfg[stage]
    cmd = py(
        "agent.train",
        "--algo",
        JOINT_STAGES[stage][0],
        "--levels",
        str(p.cfg["train_levels"]),
        "--timesteps",
        str(int(j["timesteps"])),
        "--workers",
        str(int(j["envs"])),
        "--out",
        str(p.out / stage),
        "--resume",
    )
    for item in j.get("set") or []:
        cmd += ["--set", str(item)]
    return cmd + p.device


def stage_maml(p: Pipeline, name: str = "maml") -> dict[str, Any]:
    """MAML (name maml: the config's meta-optimizer) or Reptile (name reptile: the same config
    with the first-order Reptile meta-optimizer, the cheap comparison)."""
    if name not in p.cfg["suite"]["agents"]:
        print(f"{name} is not in suite.agents: nothing to train")
        return {"skipped": True}
    run_command(
        maml_command(p, name), "meta-training" if name == "maml" else "Reptile meta-training"
    )
    return {"checkpoint": str(p.out / name / "checkpoint.pt")}


def stage_joint(p: Pipeline, stage: str = "joint") -> dict[str, Any]:
    """Joint PPO (always: the report shows it) or joint Rainbow (when suite.agents lists it)."""
    if stage != "joint" and stage not in p.cfg["suite"]["agents"]:
        print(f"{stage} is not in suite.agents: nothing to train")
        return {"skipped": True}
    run_command(joint_command(p, stage), f"{JOINT_STAGES[stage][1]} training")
    return {"checkpoint": str(p.out / stage / "checkpoint.pt")}


def docker_available() -> tuple[bool, str]:
    proc = subprocess.run(py("evaluation", "docker", "up"), capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0:
        return True, text.splitlines()[0] if text else "daemon up"
    return False, text.splitlines()[-1] if text else f"exit {proc.returncode}"


def stage_images(p: Pipeline, runtime: str) -> dict[str, Any]:
    if runtime == "local":
        print("runtime local (--runtime local): agents run as local processes, not in Docker")
        return {"runtime": "local", "why": "--runtime local"}
    ok, why = docker_available()
    if not ok:
        if runtime == "docker":
            raise UserError(f"--runtime docker, but no Docker daemon can be had: {why}")
        print(
            f"NOTE: no Docker daemon can be had ({why}).\nThe agents will run as local "
            "processes, with the same server, budget and scoring but without the container's "
            "isolation. `python -m evaluation docker up` says what is missing.",
            flush=True,
        )
        return {"runtime": "local", "why": why}
    print(f"Docker: {why}", flush=True)
    agents = p.cfg["suite"]["agents"]
    for agent in agents:
        if agent in CHECKPOINT_AGENTS:
            program, stage, _ = CHECKPOINT_AGENTS[agent]
            cmd = py(
                "evaluation",
                "build",
                "--agent",
                program,
                "--checkpoint",
                str(p.out / stage / "checkpoint.pt"),
                "--tag",
                IMAGE_TAGS[agent],
            )
        else:
            cmd = py("evaluation", "build", "--agent", agent)
        run_command(cmd, f"building the {agent} image")
    return {"runtime": "docker", "why": why}


def suite_command(p: Pipeline, runtime: str) -> list[str]:
    s = p.cfg["suite"]
    agents = [
        f"{a}={CHECKPOINT_AGENTS[a][0]}"
        if a in CHECKPOINT_AGENTS and CHECKPOINT_AGENTS[a][0] != a
        else a
        for a in s["agents"]
    ]
    cmd = py(
        "evaluation",
        "suite",
        "--agents",
        ",".join(agents),
        "--levels",
        str(p.cfg["test_levels"]),
        "--seeds",
        seeds_arg(parse_seeds(s["seeds"])),
        "--budget",
        str(int(s["budget"])),
        "--wallclock",
        str(float(s["wallclock"])),
        "--runtime",
        runtime,
        "--workers",
        str(int(s["workers"])),
        "--out",
        str(p.out / "suite"),
    )
    cmd += p.backend
    if s.get("record"):
        cmd.append("--record")
    ppo_set, maml_set, rainbow_set = (
        [x for item in s.get(key) or [] for x in ("--set", str(item))]
        for key in ("ppo_set", "maml_set", "rainbow_set")
    )
    # each program's settings: a checkpoint agent gets its program's, so that only the
    # initialization differs from the agent that learns from scratch
    program_sets = {"ppo2": ppo_set, "maml": ppo_set + maml_set, "rainbow": rainbow_set}
    args: dict[str, list[str]] = {}
    for agent in s["agents"]:
        if agent not in CHECKPOINT_AGENTS:
            continue
        program, stage, option = CHECKPOINT_AGENTS[agent]
        args[agent] = list(program_sets[program])
        if runtime == "local":
            args[agent] = [option, str((p.out / stage / "checkpoint.pt").resolve()), *args[agent]]
        else:
            cmd += ["--image", f"{agent}={IMAGE_TAGS[agent]}"]
    for program in ("ppo2", "rainbow"):
        if program in s["agents"] and program_sets[program]:
            args[program] = list(program_sets[program])
    for name, a in args.items():
        if a:
            cmd += ["--agent-args", f"{name}={shlex.join(a)}"]
    return cmd


def more_seeds(p: Pipeline) -> bool:
    """Whether the config asks for seeds the finished suite stage did not run."""
    ran = p.state["stages"].get("suite", {}).get("seeds")
    return ran is not None and not set(p.cfg["suite"]["seeds"]) <= set(ran)


def stage_suite(p: Pipeline, runtime: str) -> dict[str, Any]:
    run_command(suite_command(p, runtime), "the evaluation suite")
    return {"report": str(p.out / "suite" / "report.md"), "seeds": p.cfg["suite"]["seeds"]}


# ---------------------------------------------------------------------------------- report


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _floats(rows: list[dict[str, str]], key: str) -> list[float]:
    out = []
    for r in rows:
        try:
            out.append(float(r[key]))
        except (KeyError, ValueError):
            out.append(float("nan"))
    return out


def plot_meta_training(
    rows: list[dict[str, str]], path: Path, title: str = "MAML meta-training (training levels)"
) -> bool:
    if not rows:
        return False
    from sonic_common import plots

    its = _floats(rows, "iteration")
    steps = sorted(int(k.split("_")[1]) for k in rows[0] if k.startswith("return_"))
    fig, ax = plots.figure(6, 3.5)
    for j in steps:
        ax.plot(
            its,
            _floats(rows, f"return_{j}"),
            marker=".",
            label="before adaptation" if j == 0 else f"after {j} inner step(s)",
        )
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean trajectory return (game units)")
    plots.count_axis(ax.xaxis)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    plots.note(ax, "each point: mean over the iteration's sampled levels and trajectories")
    plots.save(fig, path)
    return True


def plot_joint(rows: list[dict[str, str]], path: Path, title: str = "joint PPO") -> bool:
    if not rows or "mean_return" not in rows[0]:
        return False
    from sonic_common import plots

    fig, ax = plots.figure(6, 3.5)
    x, y = _floats(rows, "timesteps"), _floats(rows, "mean_return")
    if all(v != v for v in y):  # NaN everywhere: no episode finished yet
        plots.no_data(ax, "no data yet: no finished episode")
    else:
        ax.plot(x, y)
        ax.set_xlabel(plots.STEPS_LABEL)
        ax.set_ylabel("episode return (mean of last 100, game units)")
        plots.count_axis(ax.xaxis)
        plots.note(ax, "all training levels together")
    ax.set_title(f"{title} (training levels)", fontsize=10)
    plots.save(fig, path)
    return True


def meta_section(out: Path, stage: str, title: str, png: str) -> list[str]:
    """The report's section on one meta-training run (OUT/<stage>/metrics.csv)."""
    rows = read_csv(out / stage / "metrics.csv")
    lines = [f"## Meta-training ({title})", ""]
    if not rows:
        return lines + ["No metrics.", ""]
    steps = sorted(int(k.split("_")[1]) for k in rows[-1] if k.startswith("return_"))
    lines += [
        f"{len(rows)} meta-iterations; mean trajectory return on the sampled training "
        "levels before adaptation and after each inner step:",
        "",
        "| iteration | " + " | ".join("before" if j == 0 else f"after {j}" for j in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for r in (rows[0], rows[-1]) if len(rows) > 1 else (rows[0],):
        lines.append(
            f"| {r['iteration']} | "
            + " | ".join(f"{float(r[f'return_{j}']):.1f}" for j in steps)
            + " |"
        )
    lines.append("")
    if plot_meta_training(rows, out / png, f"{title} meta-training (training levels)"):
        lines += [f"![{title} meta-training]({png})", ""]
    return lines


def report_section(text: str, heading: str) -> list[str]:
    """The lines of a markdown section (`heading` up to the next heading of its level or
    above), without the heading; [] when absent."""
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return []
    out = []
    for line in lines[start + 1 :]:
        hashes = len(line) - len(line.lstrip("#"))
        if 0 < hashes <= level and line[hashes : hashes + 1] == " ":
            break
        out.append(line)
    return out


def evaluation_section(suite_report: Path) -> list[str]:
    """The suite's overall table, aggregate figures and probability of improvement, with the
    links made relative to the pipeline's report."""
    from evaluation.suites.suite_cli import overall_table

    text = suite_report.read_text()
    lines = [
        overall_table(suite_report),
        "",
        "IQM and mean: of the normalized scores over all seed × level runs, with 95% "
        "stratified-bootstrap confidence intervals over seeds (rliable); raw: game units. "
        "Normalization, per-level tables, learning curves and each agent's best and median "
        "episode per level: [suite/report.md](suite/report.md).",
        "",
    ]
    for png, alt in (
        ("intervals.png", "IQM and mean with intervals"),
        ("profile.png", "performance profile"),
        ("curves/overall.png", "IQM learning curves"),
    ):
        if (suite_report.parent / png).is_file():
            lines += [f"![{alt}](suite/{png})", ""]
    poi = report_section(text, "### Probability of improvement")
    if poi:
        heading = next(
            line for line in text.splitlines() if line.startswith("### Probability of improvement")
        )
        lines += [heading, *poi]
    return lines


AGENTS_SECTION = (
    "## Agents",
    "",
    "- **maml**: `agent.maml` with the meta-trained initialization: inner "
    "policy-gradient steps with the meta-learned step size, then PPO from the adapted "
    "parameters for the rest of the budget.",
    "- **reptile** (when listed): `agent.maml` with an initialization meta-trained by "
    "first-order Reptile on the same levels and scale instead of MAML.",
    "- **joint**: `agent.ppo2 --init` with the joint-PPO network, fine-tuned by PPO.",
    "- **joint_rainbow** (when listed): `agent.rainbow --init` with the joint-Rainbow "
    "network, fine-tuned by Rainbow (a fresh replay and optimizer).",
    "- **ppo2**: the contest's PPO2 baseline from scratch (same PPO settings).",
    "- **rainbow** (when listed): the contest's Rainbow baseline from scratch (`agent.rainbow`).",
    "- **jerk**, **random**: the contest's JERK baseline and uniform random actions.",
    "",
)
ATARI_NOTE = (
    "These are Atari 2600 games, not Sonic levels: the pipeline's ROM-free "
    "default. Raw scores are game scores; normalized scores use the published "
    "random and human scores (0 = random play, 1 = human). Compare agents with "
    "each other, not with the Sonic contest's numbers.",
    "",
)


def stage_report(p: Pipeline, sonic: bool) -> Path:
    out = p.out
    lines = _report_intro(p)
    lines += meta_section(out, "maml", "MAML", "meta_training.png")
    if (out / "reptile" / "metrics.csv").is_file():
        lines += meta_section(out, "reptile", "Reptile", "reptile_training.png")
    lines += joint_section(out)
    if (out / "joint_rainbow" / "learning.csv").is_file():
        lines += joint_section(out, "joint_rainbow")
    lines += ["## Evaluation on the held-out levels", ""]
    suite_report = out / "suite" / "report.md"
    if suite_report.is_file():
        lines += evaluation_section(suite_report)
    lines += AGENTS_SECTION
    if not sonic:
        lines += ATARI_NOTE
    path = out / "report.md"
    write_atomic(path, "\n".join(lines))
    return path


def _report_intro(p: Pipeline) -> list[str]:
    """The report's title, what was run on which machine, and the stages' times."""
    stages = p.state["stages"]
    total = sum(float(st.get("seconds", 0.0)) for st in stages.values())
    runtime = stages.get("images", {}).get("runtime", "?")
    joint_rainbow = "joint_rainbow" in p.cfg["suite"]["agents"]
    trained = "MAML, joint PPO and joint Rainbow" if joint_rainbow else "MAML and joint PPO"
    lines = [
        "# Pipeline report",
        "",
        f"Config `{p.cfg_file.name}`: {trained} on `{p.cfg['train_levels']}`, "
        f"evaluated on `{p.cfg['test_levels']}` with {len(p.cfg['suite']['seeds'])} seed(s) × "
        f"{p.cfg['suite']['budget']} timesteps per run.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), "
        f"{'CUDA' if _has_cuda() else 'no GPU'}, Python {platform.python_version()}. "
        f"Agents ran {'in Docker containers' if runtime == 'docker' else 'as local processes'}"
        f"{'' if runtime == 'docker' else ' (' + str(stages.get('images', {}).get('why')) + ')'}.",
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [
        f"| {name} | {stages[name].get('seconds', '')} |"
        for name in STAGES
        if name in stages and not stages[name].get("skipped")
    ]
    lines += [f"| total (without the report) | {total:.0f} |", ""]
    return lines


def joint_section(out: Path, stage: str = "joint") -> list[str]:
    """A joint-training stage's last logged figures and its learning-curve figure."""
    title = JOINT_STAGES[stage][1]
    png = {"joint": "joint_ppo.png", "joint_rainbow": "joint_rainbow.png"}[stage]
    joint_rows = read_csv(out / stage / "learning.csv")
    has_joint_png = plot_joint(joint_rows, out / png, title)
    lines = [f"## {title[0].upper()}{title[1:]}", ""]
    if joint_rows:
        last = joint_rows[-1]
        lines.append(
            f"{last.get('timesteps')} timesteps and {last.get('episodes')} episodes over "
            "the training levels; mean return of the last 100 episodes (game units, "
            f"all levels together): {last.get('mean_return') or 'none finished'}."
        )
        lines.append("")
        if has_joint_png:
            lines += [f"![{title}]({png})", ""]
    else:
        unit = "updates" if stage == "joint" else "environment steps"
        lines += [f"No rows in {stage}/learning.csv yet (one every log_interval {unit}).", ""]
    return lines


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


# ---------------------------------------------------------------------------------- main


STAGE_TITLES = {
    "roms": "games and levels",
    "maml": "MAML meta-training",
    "reptile": "Reptile meta-training (the cheap comparison)",
    "joint": "joint PPO",
    "joint_rainbow": "joint Rainbow",
    "images": "agent images",
    "suite": "contest-style evaluation",
}


def remove_for_fresh(out: Path) -> None:
    """--fresh: remove a pipeline's directory; refuse one that is not a pipeline's (`--out .`,
    a directory of other results) rather than delete what the pipeline did not make."""
    if out.is_dir() and any(out.iterdir()) and not (out / STATE).is_file():
        raise UserError(
            f"--fresh would delete {out}, which holds no {STATE}: it is not a "
            "pipeline's directory; choose another --out or remove it yourself"
        )
    shutil.rmtree(out)


def open_pipeline(args: argparse.Namespace) -> Pipeline:
    """The pipeline in --out (new, resumed, or --fresh) with the command line's seeds, backend
    and device."""
    if args.address and args.backend != "ray":
        raise UserError("--address is for --backend ray: add it, or leave --address out")
    cfg_file = config_path(args)
    cfg = load_pipeline_config(cfg_file)
    if args.seeds is not None:
        cfg["suite"]["seeds"] = parse_seeds(args.seeds)
    out = Path(args.out)
    if args.fresh and out.exists():
        pipeline_inputs(cfg)  # the MAML config, its `set` and the level sets: all readable
        remove_for_fresh(out)
    out.mkdir(parents=True, exist_ok=True)
    p = Pipeline(out, cfg, cfg_file)
    if args.backend == "ray":
        p.backend = ["--backend", "ray"] + (["--address", args.address] if args.address else [])
    if args.device:
        p.device = ["--device", args.device]
    p.save()
    return p


def stage_is_done(p: Pipeline, stage: str, args: argparse.Namespace) -> bool:
    """Done before, and still valid: the images for another --runtime, or a suite with fewer
    seeds than asked, are not."""
    if not p.done(stage):
        return False
    if stage == "images":
        return args.runtime in ("auto", p.state["stages"][stage].get("runtime"))
    if stage == "suite":
        return not more_seeds(p)
    return True


def run_stage(p: Pipeline, stage: str, args: argparse.Namespace) -> dict[str, Any]:
    if stage == "roms":
        return stage_roms(p, args.sonic)
    if stage in ("maml", "reptile"):
        return stage_maml(p, stage)
    if stage in JOINT_STAGES:
        return stage_joint(p, stage)
    if stage == "images":
        return stage_images(p, args.runtime)
    return stage_suite(p, str(p.state["stages"]["images"]["runtime"]))


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    p = open_pipeline(args)
    out = p.out
    t_start = time.monotonic()
    print(f"pipeline {p.cfg_file.name} → {out} (rerun the same command to resume)", flush=True)
    try:
        for stage in STAGES[:-1]:
            if stage_is_done(p, stage, args):
                print(f"== {stage}: done before, skipped", flush=True)
                continue
            banner(stage, STAGE_TITLES[stage])
            t0 = time.monotonic()
            info = run_stage(p, stage, args)
            p.record(stage, time.monotonic() - t0, **info)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished stages are kept in {out / STATE}; rerun the same command "
            "to go on",
            file=sys.stderr,
        )
        return 130
    report = stage_report(p, args.sonic)
    print(f"\npipeline done in {time.monotonic() - t_start:.0f} s (this call); report: {report}")
    suite_report = out / "suite" / "report.md"
    if suite_report.is_file():
        from evaluation.suites.suite_cli import overall_table

        print(overall_table(suite_report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
