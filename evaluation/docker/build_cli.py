"""`python -m evaluation build --agent NAME [--checkpoint FILE] [--tag TAG] [--base-image IMG]
[--force]`.

Builds the top-level Dockerfile offline: wheels come from `pip download` on the host (cached),
the build runs with `network_mode=none`. The default tag is the one the runner looks for. An
image is rebuilt only when its context changed (sources, wheels, arguments). `--checkpoint` adds
a thin layer with the checkpoint on top of the agent's plain image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.agents import agent_entry
from evaluation.docker.daemon import docker_client
from evaluation.docker.images import (
    BASE_IMAGE,
    build_agent_image,
    default_agent_tag,
    ensure_base_image,
    image_exists,
)
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.files import require_torch_archive


def check_checkpoint(path: Path) -> None:
    """Refuse a file that is not a policy checkpoint before it is baked into an image: a
    `torch.save`d dict with `policy_spec` and `policy_state`, loadable with weights_only=True
    (the format agent.checkpoint reads; evaluation does not import agent)."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file: give the path of a checkpoint.pt")
    require_torch_archive(path)
    try:
        import torch
    except ImportError:
        return  # no torch on this host: the archive check above is all we can do
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(
            f"cannot read checkpoint {path} ({e.__class__.__name__}: {first}): "
            "give the checkpoint.pt that meta_train or agent.train wrote"
        ) from None
    if not isinstance(data, dict) or not {"policy_spec", "policy_state"} <= set(data):
        raise UserError(
            f"{path} is not a policy checkpoint (no policy_spec/policy_state): "
            "give the checkpoint.pt that meta_train or agent.train wrote"
        )


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--agent", required=True, help="agent entry point: the image runs `python -m agent.NAME`"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="copied to /opt/agent/checkpoint.pt (env AGENT_CHECKPOINT)"
    )
    parser.add_argument("--tag", help="image tag (default sonic-maml-agent-NAME:latest)")
    parser.add_argument(
        "--base-image",
        default=None,
        help=f"base image with python3.11 (default {BASE_IMAGE}, made offline "
        "if missing; python:3.11-slim where Docker Hub is reachable)",
    )
    parser.add_argument(
        "--force", action="store_true", help="build even when an image from the same context exists"
    )
    args = parser.parse_args(argv)
    entry = agent_entry(args.agent)
    if not entry.image:
        raise UserError(
            f"agent {args.agent!r} has no image ({entry.summary}): run it with "
            "`run --runtime local` or `suite --runtime local`"
        )
    if args.checkpoint is not None:
        if not entry.checkpoint:
            raise UserError(f"agent {args.agent!r} loads no checkpoint: leave out --checkpoint")
        check_checkpoint(args.checkpoint)
    tag = args.tag or default_agent_tag(args.agent)
    client = docker_client(timeout=1800)
    if args.base_image is None:
        base = ensure_base_image(client)
    else:
        base = args.base_image
        if not image_exists(client, base):
            print(f"note: {base} is not present locally; the daemon will try to pull it")
    kind = "torch" if entry.torch else "light"
    print(f"building {tag} from {base} ({kind} agent {args.agent})", flush=True)
    build_agent_image(
        client,
        args.agent,
        tag,
        base,
        checkpoint=args.checkpoint.resolve() if args.checkpoint else None,
        force=args.force,
    )
    return 0
