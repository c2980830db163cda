"""`python -m evaluation docker up|status|prune|down`: a Docker daemon, the offline base image and
the build caches."""

from __future__ import annotations

import argparse
import time

from evaluation.docker import daemon as dd
from evaluation.docker.images import (
    BASE_IMAGE,
    BUILD_LABEL,
    ensure_base_image,
    image_exists,
    image_summaries,
    prune_caches,
)
from sonic_common.errors import UserError, exit_on_user_error


def up(base_image: bool) -> int:
    found = dd.find_daemon()
    if found is not None:
        url, client = found
        print(f"daemon: {url} (already running)")
    else:
        t0 = time.monotonic()
        client = dd.start_private_daemon()
        url = dd.private_url()
        driver = client.info().get("Driver")
        print(
            f"daemon: {url} (private dockerd, {driver}, started in "
            f"{time.monotonic() - t0:.1f} s; log {dd.state_dir() / 'dockerd.log'})"
        )
    if base_image:
        ensure_base_image(client)
        print(f"base image: {BASE_IMAGE}")
    if url == dd.private_url():
        print(f"(optional, for the docker CLI) export DOCKER_HOST={url}")
    return 0


def status() -> int:
    found = dd.find_daemon(timeout=30)
    if found is None:
        pid = dd.private_daemon_pid()
        extra = f" (private dockerd pid {pid} does not answer)" if pid else ""
        print(f"daemon: none{extra}; run `python -m evaluation docker up`")
        return 1
    url, client = found
    version = client.version()
    pid = dd.private_daemon_pid()
    private = f" (private dockerd, pid {pid})" if pid and url == dd.private_url() else ""
    print(
        f"daemon: {url}{private}, Docker {version.get('Version')}, "
        f"storage {client.info().get('Driver')}"
    )
    has_base = image_exists(client, BASE_IMAGE)
    print(f"base image: {BASE_IMAGE} {'present' if has_base else 'missing'}")
    agents = [
        img
        for img in image_summaries(client)
        if any(t.startswith("sonic-maml-agent-") for t in img.tags)
    ]
    if not agents:
        print("agent images: none (`python -m evaluation build --agent NAME`)")
    for img in agents:
        print(f"agent image: {', '.join(img.tags)}  {img.size / 1e6:.0f} MB  {img.id[:17]}")
    for img in image_summaries(client, {"label": f"{BUILD_LABEL}=requirements"}):
        if img.tags:
            print(
                f"requirements cache: {', '.join(img.tags)}  {img.size / 1e6:.0f} MB "
                "(`docker prune` drops it; the next build installs the requirements again)"
            )
    return 0


def prune(older_than: str) -> int:
    import re

    if not re.fullmatch(r"\d+(\.\d+)?(s|m|h)", older_than):
        raise UserError(
            f"--older-than must be a duration such as 30m, 1h or 90s, not {older_than!r}"
        )
    found = dd.find_daemon(timeout=30)
    if found is None:
        raise UserError("no Docker daemon answers: run `python -m evaluation docker up`")
    removed, freed = prune_caches(found[1], older_than)
    for tag in removed:
        print(f"untagged {tag}")
    print(
        f"requirements caches dropped: {len(removed)}; build leftovers older than "
        f"{older_than}: {freed / 1e6:.0f} MB freed"
    )
    return 0


def down() -> int:
    if dd.stop_private_daemon():
        print(f"stopped the private daemon (images kept under {dd.state_dir()})")
    else:
        print("no private daemon running")
    return 0


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation docker", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser(
        "up", help="use a running daemon or start a private one (root); make the base image"
    )
    p_up.add_argument(
        "--no-base-image", action="store_true", help=f"do not build/import {BASE_IMAGE}"
    )
    sub.add_parser("status", help="daemon, base image, agent images")
    p_prune = sub.add_parser(
        "prune",
        help="drop the requirements caches of the agent builds "
        "and old leftovers of interrupted builds",
    )
    p_prune.add_argument(
        "--older-than",
        default="1h",
        help="leftovers older than this only (a build running now keeps its own; default 1h)",
    )
    sub.add_parser("down", help="stop the private daemon")
    args = parser.parse_args(argv)
    if args.action == "up":
        return up(base_image=not args.no_base_image)
    if args.action == "status":
        return status()
    if args.action == "prune":
        return prune(args.older_than)
    if args.action == "down":
        return down()
    raise UserError(f"unknown action {args.action}")
