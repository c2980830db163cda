"""Learner configs: typed defaults (dataclasses, the one source of every default), the YAML
shipped for the command (only what it changes), a `--config` YAML file, then `key=value`
overrides.

    cfg = load_config("mine.yaml", ["nsteps=64", "policy.body=mlp"])   # agent.ppo2's keys

An override's value is parsed as YAML (`lr=3e-4` is a float, `clip_value=false` a bool), and its
key must exist in the file (dots reach into nested mappings), so a typo is a one-line error
instead of a silently ignored setting.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sonic_common.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_PPO_CONFIG = CONFIG_DIR / "ppo2.yaml"


# the kinds a config key is checked against (bool before int: a bool is an int); a Union of
# several (bool | str) takes any value
KINDS = (bool, int, float, list, dict)
UNIONS = (typing.Union, types.UnionType)


@dataclass
class RunConfig:
    """The running keys of every learning agent's config (agent.ppo2, agent.rainbow, agent.maml,
    agent.train), with their defaults."""

    seed: int = 0  # torch/numpy seed; environments get seed + i (the contest agent: $AGENT_SEED)
    device: str = "auto"  # auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...
    torch_threads: int = 0  # torch CPU threads; 0: all cores this process may use
    # a learning.csv / TensorBoard row every this many updates (Rainbow: environment steps)
    log_interval: int = 1
    # checkpoint.pt every this many updates (Rainbow: environment steps), and at the end
    save_interval: int = 10
    tensorboard: bool = True  # also write TensorBoard event files (when tensorboard is installed)


@dataclass
class TrainingRunConfig(RunConfig):
    """RunConfig, and the environments a PPO or Rainbow learner steps."""

    # environments stepped in parallel (worker subprocesses, one emulator each); the contest
    # gives an agent exactly 1. `agent.train --workers E` sets it
    workers: int = 1


@dataclass
class PolicyConfig:
    """`policy:`, the network (agent.policies.spec_from_config)."""

    body: str = "auto"  # auto (Nature CNN for 84×84×4 frames, MLP otherwise), cnn or mlp
    features: int = 512  # cnn: width of the Nature CNN's fully connected layer
    hidden: list[int] = field(default_factory=lambda: [100, 100])  # mlp: layer widths
    activation: str = "relu"  # mlp: relu or tanh


def find_config(value: str | Path, directory: Path) -> Path:
    """A config given as a path (relative to the current directory), or by its name among the
    configs shipped in `directory`: `halfcheetah-dir` or `halfcheetah-dir.yaml`."""
    path = Path(value)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    shipped = f"{directory.parent.name}/{directory.name}"  # e.g. meta_train/configs
    # a bare name, or the repository's path to a shipped config (as the docs write it) given
    # from another directory or an installed package
    if (len(path.parts) == 1 or path.parent.as_posix().endswith(shipped)) and (
        directory / name
    ).is_file():
        return directory / name
    known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
    raise UserError(
        f"config {value} is neither a file nor a shipped config: give a YAML path or one of {known}"
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist: give an existing --config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"config file {path} is not valid YAML{where}: {problem}") from e
    if data is None:  # no key (only comments): a config that changes nothing
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of key: value lines")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad override {text!r}: write it as key=value, e.g. nsteps=128")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip().split("."), parsed


def apply_overrides(
    cfg: dict[str, Any],
    overrides: Sequence[str],
    source: str = "the config",
    reference: TypedDefaults | None = None,
) -> dict[str, Any]:
    """`cfg` with each key=value of `overrides` set, of the kind of the key's type in
    `reference` (the typed defaults; the current value's kind without them)."""
    cfg = copy.deepcopy(cfg)
    kinds = Kinds.of(reference)
    for text in overrides:
        keys, value = parse_override(text)
        _set(cfg, keys, value, source, kinds)
    return cfg


@dataclass(frozen=True)
class Kinds:
    """What a key may hold: its typed default and, where given, its annotated type."""

    defaults: dict[str, Any]
    hints: dict[str, Any]

    @classmethod
    def of(cls, reference: TypedDefaults | None) -> Kinds:
        if reference is None:
            return cls({}, {})
        return cls(reference.typed(), reference.key_hints())

    def default(self, keys: list[str], current: Any) -> Any:
        node: Any = self.defaults
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return current
            node = node[key]
        return node


def _set(
    cfg: dict[str, Any], keys: list[str], value: Any, source: str, kinds: Kinds | None = None
) -> None:
    kinds = kinds or Kinds({}, {})
    node = cfg
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            path = ".".join(keys[: i + 1])
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise UserError(f"unknown config key {path!r} in {source}: known keys: {known}")
        if i == len(keys) - 1:
            path = ".".join(keys)
            default, hint = kinds.default(keys, node[key]), kinds.hints.get(path)
            node[key] = _typed(value, default, hint, path, source)
        else:
            node = node[key]


def _allowed(default: Any, hint: Any) -> tuple[type | None, bool]:
    """(the kind a key takes: bool, int, float, list, dict, or None for any; whether null is
    allowed), from its annotated type, else from its default."""
    if hint is not None:
        args = typing.get_args(hint) if typing.get_origin(hint) in UNIONS else (hint,)
        nullable = type(None) in args
        kinds = [typing.get_origin(a) or a for a in args if a is not type(None)]
        kind = kinds[0] if len(kinds) == 1 and kinds[0] in KINDS else None
        return kind, nullable
    if default is None:
        return None, True
    kind = next((k for k in KINDS if isinstance(default, k)), None)
    return kind, False


def _typed(value: Any, default: Any, hint: Any, path: str, source: str) -> Any:
    """`value` for a key of the kind its type (`hint`) or typed default says: a section stays a
    section, a number a number (a whole number for an int; YAML's `1e-3`, a string, is read as
    one), a flag true or false, a list a list; null where the type allows None. Strings (and
    keys of several kinds, e.g. true, false or auto) take any value: their users check them."""
    kind, nullable = _allowed(default, hint)
    if value is None and (nullable or kind is None):
        return None
    if kind is dict and not isinstance(value, dict):
        first = next(iter(default), "key") if isinstance(default, dict) else "key"
        raise UserError(
            f"{path} in {source} is a section: set its keys instead, e.g. {path}.{first}=..."
        )
    wanted = None
    if kind is bool and not isinstance(value, bool):
        wanted = "true or false"
    elif kind in (int, float):
        number = _number(value)
        if number is None or (kind is int and not float(number).is_integer()):
            wanted = "a whole number" if kind is int else "a number"
        else:
            value = int(number) if kind is int else number
    elif kind is list and not isinstance(value, list):
        wanted = "a list, e.g. [a, b]"
    if wanted is not None:
        nothing = " (or null)" if nullable else ""
        raise UserError(f"{path}={value!r} in {source}: {path} takes {wanted}{nothing}")
    return value


def _number(value: Any) -> int | float | None:
    """A finite int or float as given, a numeric string read as a float, anything else None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except (ValueError, OverflowError):
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:  # an int too large for a float
        return None


def field_hints(*classes: type, prefix: str = "") -> dict[str, Any]:
    """Each field's type by its dotted key, from dataclasses (a section: a nested dataclass)."""
    hints: dict[str, Any] = {}
    for cls in classes:
        resolved = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = resolved[f.name]
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                hints.update(field_hints(hint, prefix=f"{prefix}{f.name}."))
            else:
                hints[f"{prefix}{f.name}"] = hint
    return hints


@dataclass(frozen=True)
class TypedDefaults:
    """A command's defaults from typed configs (`config`: a dataclass, nested dataclasses for
    sections, or a function merging several into one dict), the directory of the YAML configs
    shipped for it (which list only what they change), and `file`, the shipped YAML the command
    itself reads over the typed defaults (its own changes to them), if any."""

    config: Callable[[], Any]
    directory: Path
    file: Path | None = None
    # each key's type (field_hints), where the defaults alone do not say it: a key whose
    # default is None; default: the fields of `config` when it is a dataclass
    hints: Callable[[], dict[str, Any]] | None = None

    def key_hints(self) -> dict[str, Any]:
        if self.hints is not None:
            return self.hints()
        if isinstance(self.config, type) and dataclasses.is_dataclass(self.config):
            return field_hints(self.config)
        return {}

    def typed(self) -> dict[str, Any]:
        """The typed defaults alone, without the command's YAML: each key's kind."""
        value = self.config()
        return copy.deepcopy(value) if isinstance(value, dict) else dataclasses.asdict(value)

    def as_dict(self) -> dict[str, Any]:
        cfg = self.typed()
        if self.file is not None:
            _update(cfg, read_yaml(self.file), str(self.file), self)
        return cfg

    @property
    def name(self) -> str:
        return self.file.name if self.file else getattr(self.config, "__name__", "the defaults")


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    defaults: TypedDefaults | None = None,
) -> dict[str, Any]:
    """The defaults (agent.ppo2's when None), updated by `path` (any subset of the keys, a YAML
    path or a shipped config's name), then by the overrides."""
    if defaults is None:
        from agent.configs import PPO2  # torch: only for the commands that need it

        defaults = PPO2
    cfg = defaults.as_dict()
    if path is not None:
        path = find_config(path, defaults.directory)
        _update(cfg, read_yaml(path), str(path), defaults)
    return apply_overrides(cfg, overrides, f"{defaults.name} (--set)", defaults)


def _update(
    cfg: dict[str, Any],
    changes: dict[str, Any],
    source: str,
    reference: TypedDefaults | None = None,
) -> None:
    """Set each (dotted) key of `changes` in `cfg`; a key `cfg` lacks is a one-line error."""
    kinds = Kinds.of(reference)
    for key, value in _flatten(changes):
        _set(cfg, key.split("."), value, source, kinds)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            items += _flatten(v, key + ".")
        else:
            items.append((key, v))
    return items


def require(cfg: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise UserError(f"config is missing key(s) {', '.join(missing)}: add them to the YAML")


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_device(text: str) -> str:
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: choose auto, cpu, cuda or cuda:N")
    return text


class _DeviceOverride(argparse.Action):
    """`--device X` is `--set device=X` (the config key every torch command has)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, [*items, f"device={values}"])


def add_set_option(
    parser: argparse.ArgumentParser, help: str = "change one config key (repeatable)"
) -> None:
    """The `--set KEY=VALUE` option (repeatable) of every command with a typed config; the
    values land in `overrides` for `apply_overrides`."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_device_option(parser: argparse.ArgumentParser, dest: str = "overrides") -> None:
    """The `--device auto|cpu|cuda` option of every command where torch runs."""
    parser.add_argument(
        "--device",
        dest=dest,
        action=_DeviceOverride,
        type=parse_device,
        default=argparse.SUPPRESS,
        metavar="auto|cpu|cuda",
        help="where torch runs (auto: cuda when available); = --set device=...",
    )
