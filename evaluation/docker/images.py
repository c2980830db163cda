"""Images without Docker Hub: a Debian base made by debootstrap, and agent images built offline.

Base: `debootstrap --variant=minbase` of bookworm (its python3 is 3.11, like our wheels), trimmed,
tarred once into the state directory's cache, then `docker import`ed as `sonic-maml-base:bookworm`.

Agent images: the top-level `Dockerfile` built from a minimal context (the project's sources,
the wheels that `pip download` fetched on the host, an optional checkpoint) with the network off.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound

from evaluation.agents import AGENTS, agent_entry
from evaluation.docker.daemon import cache_dir, ensure_packages
from evaluation.docker.packaging import SOURCE_ROOT, copy_build_sources, declared_requirement
from sonic_common.agent_env import CHECKPOINT_ENV
from sonic_common.errors import UserError

BASE_IMAGE = "sonic-maml-base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ["python3", "python3-venv", "python-is-python3"]
# Dropped from the base rootfs: caches, docs, manuals, translations.
TRIM = [
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/log",
]
BASE_CHANGES = [
    "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]

REPO_ROOT = SOURCE_ROOT  # the checkout, or site-packages when installed
LIGHT_REQUIREMENTS = ["numpy", "gymnasium", "pyyaml"]
# torch as pyproject.toml pins it (the one place): the images learn with the host's version
TORCH_REQUIREMENTS = [
    declared_requirement("torch"),
    "opencv-python-headless",
    "numpy",
    "gymnasium",
    "pyyaml",
]
# Needed only to build our own distribution inside the image (pyproject's build backend).
BUILD_REQUIREMENTS = ["setuptools>=68"]
# Container memory limits above the default (runtime.DEFAULT_MEMORY, 4g), from the agent
# registry, written into the image as a label that `run` reads when --memory is not given.
AGENT_MEMORY = {name: e.memory for name, e in AGENTS.items() if e.memory is not None}
MEMORY_LABEL = "sonic-maml.memory"
CHECKPOINT_PATH = "/opt/agent/checkpoint.pt"  # in the image; also its env $CHECKPOINT_ENV
# The Dockerfile's stages carry BUILD_LABEL: `requirements` and `venv` (kept, tagged
# REQUIREMENTS_REPO:<key> and <key>-venv: the cache that makes a rebuild after a source change
# fast), `deps` (deleted after the build, found by its BUILD_ID_LABEL, so that two builds at once
# never delete each other's stages) and `agent` (the image).
BUILD_LABEL = "sonic-maml.build"
BUILD_ID_LABEL = "sonic-maml.build-id"
REQUIREMENTS_REPO = "sonic-maml-requirements"
VENV_SUFFIX = "-venv"  # the `venv` stage's tag: REQUIREMENTS_REPO:<key>-venv


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False


def default_agent_tag(agent: str) -> str:
    return f"sonic-maml-agent-{agent}:latest"


def requirements_for(agent: str) -> list[str]:
    """The pip requirements of a registered agent: torch and opencv when its entry says so."""
    return TORCH_REQUIREMENTS if agent_entry(agent).torch else LIGHT_REQUIREMENTS


# ---------------------------------------------------------------------------- base image


def base_rootfs_tarball() -> Path:
    """The cached rootfs tarball, made by debootstrap the first time (about 30-60 s)."""
    tarball = cache_dir() / f"rootfs-{SUITE}.tar"
    if tarball.exists():
        return tarball
    if os.getuid() != 0:
        raise UserError(
            f"building the base image {BASE_IMAGE} needs root (debootstrap): run "
            "`python -m evaluation docker up` as root, or pass --base-image IMAGE"
        )
    ensure_packages({"debootstrap": "debootstrap"})
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
    rootfs = work / "rootfs"
    try:
        print(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}) ...", flush=True)
        t0 = time.monotonic()
        done = subprocess.run(
            [
                shutil.which("debootstrap") or "/usr/sbin/debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-15:])
            print(tail, file=sys.stderr)
            raise UserError(f"debootstrap failed (exit {done.returncode}); is {MIRROR} reachable?")
        print(f"debootstrap done in {time.monotonic() - t0:.0f} s", flush=True)
        for rel in TRIM:
            target = rootfs / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()
        partial = work / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True
        )
        partial.replace(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def ensure_base_image(client: docker.DockerClient, tag: str = BASE_IMAGE) -> str:
    """Make sure the offline Debian base image exists (import the cached rootfs); return its tag.

    One import at a time (a lock): two imported at once would leave two base images under one
    tag, and builds started between them on different ones."""
    if image_exists(client, tag):
        return tag
    with _locked(f"base-{tag.replace(':', '-').replace('/', '-')}"):
        if not image_exists(client, tag):
            _import_base_image(client, tag)
    return tag


def _import_base_image(client: docker.DockerClient, tag: str) -> None:
    t0 = time.monotonic()
    tarball = base_rootfs_tarball()
    repository, _, version = tag.rpartition(":")
    print(f"docker import {tarball.name} -> {tag}", flush=True)
    client.api.import_image_from_file(
        str(tarball), repository=repository, tag=version, changes=BASE_CHANGES
    )
    size = client.images.get(tag).attrs["Size"]
    print(
        f"base image {tag}: {size / 1e6:.0f} MB, ready in {time.monotonic() - t0:.1f} s", flush=True
    )


# ---------------------------------------------------------------------------- agent images


def download_wheels(requirements: Iterable[str]) -> Path:
    """Wheels for `requirements` (and the build backend), fetched once by pip on the host.

    Cached under the state directory, keyed by the requirement list; one download at a time per
    list (two builds at once in a fresh cache shared, and emptied, one `.partial` folder).
    """
    reqs = sorted(set(requirements) | set(BUILD_REQUIREMENTS))
    target = wheels_dir(requirements)
    with _locked(f"wheels-{target.name}"):
        if not (target / ".complete").exists():
            _pip_download(reqs, target)
    return target


def wheels_dir(requirements: Iterable[str]) -> Path:
    """Where `download_wheels` keeps the wheels of `requirements`."""
    reqs = sorted(set(requirements) | set(BUILD_REQUIREMENTS))
    return cache_dir() / "wheels" / hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]


def _pip_download(reqs: list[str], target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"pip download {' '.join(reqs)} ...", flush=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--only-binary=:all:",
            "--dest",
            str(partial),
            *reqs,
        ]
    )
    if done.returncode != 0:
        raise UserError(f"pip download failed (exit {done.returncode}) for: {' '.join(reqs)}")
    (partial / "requirements.txt").write_text("\n".join(reqs) + "\n")
    (partial / ".complete").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)


def make_context(
    dest: Path,
    requirements: list[str],
    checkpoint: Path | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> None:
    """A minimal build context in `dest`: Dockerfile, sources, `.whl/` wheels, checkpoint.

    `extra_files` ({relative path: content}) adds files to the sources, e.g. a test agent module.
    The layout mirrors the repository, so the same Dockerfile also builds from the repo root.
    """
    copy_build_sources(dest)  # from a checkout or an installed package
    for rel, content in (extra_files or {}).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(content)
    wheels = download_wheels(requirements)
    (dest / ".whl").mkdir()
    for wheel in wheels.glob("*.whl"):
        if _same_fs(wheel, dest):
            os.link(wheel, dest / ".whl" / wheel.name)
        else:
            shutil.copy2(wheel, dest / ".whl" / wheel.name)
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise UserError(f"checkpoint {checkpoint} is not a file")
        shutil.copy2(checkpoint, dest / "checkpoint.pt")


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


@dataclass(frozen=True)
class ImageSummary:
    id: str
    tags: list[str]
    size: int  # bytes


def image_summaries(
    client: docker.DockerClient, filters: dict[str, Any] | None = None
) -> list[ImageSummary]:
    """The daemon's images (matching `filters`) as its list call gives them, without the
    inspection per image that `client.images.list` does: an image another build or prune
    removes meanwhile would fail that."""
    return [
        ImageSummary(
            image["Id"],
            [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"],
            int(image.get("Size") or 0),
        )
        for image in client.api.images(filters=filters or {})
    ]


def prune_build_leftovers(client: docker.DockerClient, build_id: str) -> None:
    """Drop the untagged `deps` stage images of one build (labelled with its id).

    With vfs every layer is a full copy of the file system, so they would fill the disk quickly.
    Only this build's: another build running at the same time still needs its own. Removed one
    by one, not by `images.prune`: the daemon runs one prune at a time and refuses a second ("a
    prune operation is already running"), which left a stage behind when two builds ended
    together."""
    with contextlib.suppress(APIError):
        leftovers = image_summaries(
            client, {"dangling": True, "label": f"{BUILD_ID_LABEL}={build_id}"}
        )
        for image in leftovers:  # removing the stage's last image removes its untagged parents
            with contextlib.suppress(APIError, ImageNotFound):
                client.images.remove(image.id, noprune=False)


def requirements_tag(base_image: str, requirements: list[str]) -> str:
    """The tag that keeps the requirements stage of `base_image` + `requirements`."""
    key = hashlib.sha256(repr((base_image, sorted(requirements))).encode()).hexdigest()[:12]
    return f"{REQUIREMENTS_REPO}:{key}"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock between the processes of this host (a file in the cache directory)."""
    (cache_dir() / "locks").mkdir(exist_ok=True)
    with open(cache_dir() / "locks" / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_requirements(
    client: docker.DockerClient, ctx: Path, base_image: str, requirements: list[str], quiet: bool
) -> str:
    """Build (or find in Docker's cache) the Dockerfile's `requirements` and `venv` stages and tag
    them (`<tag>`, `<tag>-venv`), so that they outlive the clean-up after the build; return the
    requirements tag.

    One build at a time per requirement set (a lock): a second one waits, then finds them cached
    instead of installing torch a second time, and its image gets the same venv layer (made at
    once, two copies of /opt/venv differ in their directories' times). A tag moved to a new image
    (new wheels, a changed Dockerfile) drops the old one unless a build still uses it (`docker
    prune` gets it later)."""
    tag = requirements_tag(base_image, requirements)
    buildargs = {"BASE_IMAGE": base_image, "REQUIREMENTS": " ".join(requirements)}
    with _locked(tag.replace(":", "-")):
        for target, stage_tag in (("requirements", tag), ("venv", tag + VENV_SUFFIX)):
            _build_cached_stage(client, ctx, target, stage_tag, buildargs, quiet)
    return tag


def build_messages(
    client: docker.DockerClient, what: str, **kwargs: Any
) -> Iterator[dict[str, Any]]:
    """`docker build` with the network off, its progress messages one by one; a build that
    fails, or that the daemon refuses (a Dockerfile without the target asked for, a context it
    cannot read), ends in one UserError line naming `what`."""
    try:
        for chunk in client.api.build(
            network_mode="none", rm=True, forcerm=True, decode=True, **kwargs
        ):
            if "error" in chunk:
                raise UserError(f"docker build of {what} failed: {chunk['error'].strip()}")
            yield chunk
    except APIError as e:
        raise UserError(f"docker build of {what} failed: {e.explanation or e}") from None


def _build_cached_stage(
    client: docker.DockerClient,
    ctx: Path,
    target: str,
    tag: str,
    buildargs: dict[str, str],
    quiet: bool,
) -> None:
    previous = client.images.get(tag).id if image_exists(client, tag) else None
    t0 = time.monotonic()
    for chunk in build_messages(
        client, f"{tag} (the {target})", path=str(ctx), tag=tag, target=target, buildargs=buildargs
    ):
        if "stream" in chunk and not quiet:
            print(chunk["stream"], end="", flush=True)
    image = client.images.get(tag)
    if previous is not None and previous != image.id:
        with contextlib.suppress(APIError):
            client.images.remove(previous, noprune=False)
    if not quiet:
        state = "cached" if previous == image.id else f"built in {time.monotonic() - t0:.0f} s"
        print(f"{target} {tag} ({image.short_id}): {state}", flush=True)


def prune_caches(
    client: docker.DockerClient, older_than: str = "1h", only: Iterable[str] | None = None
) -> tuple[list[str], int]:
    """`docker prune`: untag the requirement caches (all, or the tags in `only`) and delete the
    leftovers of our builds older than `older_than` (an interrupted build's stages; never those
    of a build still running).

    An image a running build still stands on is only untagged: it goes with that build's
    clean-up. Return the removed tags and the bytes freed."""
    removed: list[str] = []
    wanted = None if only is None else set(only)
    for image in image_summaries(client, {"label": f"{BUILD_LABEL}=requirements"}):
        for tag in image.tags:
            kept_as = tag.removesuffix(VENV_SUFFIX)
            chosen = wanted is None or tag in wanted or kept_as in wanted
            if tag.startswith(f"{REQUIREMENTS_REPO}:") and chosen:
                with contextlib.suppress(APIError, ImageNotFound):
                    client.images.remove(tag, noprune=False)
                    removed.append(tag)
    freed = 0
    for stage in ("requirements", "deps"):
        with contextlib.suppress(APIError):
            report = client.images.prune(
                filters={"dangling": True, "until": older_than, "label": f"{BUILD_LABEL}={stage}"}
            )
            freed += report.get("SpaceReclaimed") or 0
    return removed, freed


CONTEXT_LABEL = "sonic-maml.context"  # digest of the build context: an equal one skips the build


def context_digest(ctx: Path, buildargs: dict[str, str]) -> str:
    """What decides an image's content: every file of the context (wheels by name and size, the
    rest by content) and the build arguments."""
    h = hashlib.sha256(repr(sorted(buildargs.items())).encode())
    for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
        rel = path.relative_to(ctx).as_posix()
        h.update(rel.encode() + b"\0")
        if rel.startswith(".whl/"):
            h.update(str(path.stat().st_size).encode())
        else:
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:32]


def _label(client: docker.DockerClient, tag: str) -> str | None:
    if not image_exists(client, tag):
        return None
    labels = client.images.get(tag).attrs.get("Config", {}).get("Labels") or {}
    return labels.get(CONTEXT_LABEL)


def _docker_build(
    client: docker.DockerClient,
    ctx: Path,
    tag: str,
    buildargs: dict[str, str],
    digest: str,
    quiet: bool,
    labels: dict[str, str] | None = None,
) -> str:
    t0 = time.monotonic()
    image_id = None
    previous = client.images.get(tag).id if image_exists(client, tag) else None
    build_id = uuid.uuid4().hex
    if "REQUIREMENTS" in buildargs:  # an agent image (not a checkpoint layer): see the Dockerfile
        cache_requirements(
            client, ctx, buildargs["BASE_IMAGE"], buildargs["REQUIREMENTS"].split(), quiet
        )
        buildargs = {**buildargs, "BUILD_ID": build_id}
        if not quiet:
            print(f"building {tag}: build id {build_id} (label {BUILD_ID_LABEL})", flush=True)
    try:
        for chunk in build_messages(
            client,
            tag,
            path=str(ctx),
            tag=tag,
            buildargs=buildargs,
            labels={CONTEXT_LABEL: digest, **(labels or {})},
        ):
            if "stream" in chunk and not quiet:
                print(chunk["stream"], end="", flush=True)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    finally:
        prune_build_leftovers(client, build_id)
    image = client.images.get(tag)
    if previous is not None and previous != image.id:
        with contextlib.suppress(APIError):  # e.g. a container or a derived image uses it
            client.images.remove(previous, noprune=False)
    if not quiet:
        print(
            f"built {tag} ({image.short_id}): {image.attrs['Size'] / 1e6:.0f} MB "
            f"in {time.monotonic() - t0:.0f} s",
            flush=True,
        )
    return image_id or image.id


def _build_if_changed(
    client: docker.DockerClient,
    ctx: Path,
    tag: str,
    buildargs: dict[str, str],
    quiet: bool,
    force: bool,
    same: str,
    labels: dict[str, str] | None = None,
) -> str:
    digest = context_digest(
        ctx, {**buildargs, **{f"label {k}": v for k, v in (labels or {}).items()}}
    )
    if not force and _label(client, tag) == digest:
        if not quiet:
            print(f"{tag} is up to date ({same})", flush=True)
        return client.images.get(tag).id
    return _docker_build(client, ctx, tag, buildargs, digest, quiet, labels)


def build_agent_image(
    client: docker.DockerClient,
    agent: str,
    tag: str,
    base_image: str,
    *,
    checkpoint: Path | None = None,
    requirements: list[str] | None = None,
    extra_files: dict[str, bytes] | None = None,
    quiet: bool = False,
    force: bool = False,
    module: str | None = None,
) -> str:
    """Build an agent image offline (`network_mode=none`), streaming progress; return its id.

    The image runs `python -m MODULE`: the agent registry's module for `agent`, or `module`
    (an agent that is not registered, e.g. one added by `extra_files`).

    An image already tagged `tag` from the same context (same sources, wheels, checkpoint and
    arguments; see `context_digest`) is kept as it is unless `force`. A `checkpoint` goes in a
    thin layer on top of the agent's plain image (`default_agent_tag(agent)`, or its `:plain`
    tag when the checkpoint image itself takes the default tag; built first when missing or
    stale), so a new checkpoint costs seconds, not a pip install."""
    if checkpoint is not None:
        return _build_checkpoint_image(
            client,
            agent,
            tag,
            base_image,
            checkpoint,
            requirements=requirements,
            quiet=quiet,
            force=force,
        )
    module = module or agent_entry(agent).module
    reqs = requirements if requirements is not None else requirements_for(agent)
    with tempfile.TemporaryDirectory(prefix="agent-ctx-", dir=cache_dir()) as tmp:
        ctx = Path(tmp)
        make_context(ctx, reqs, None, extra_files)
        buildargs = {
            "BASE_IMAGE": base_image,
            "AGENT_MODULE": module,
            "REQUIREMENTS": " ".join(reqs),
        }
        labels = {MEMORY_LABEL: AGENT_MEMORY[agent]} if agent in AGENT_MEMORY else None
        return _build_if_changed(
            client, ctx, tag, buildargs, quiet, force, "same sources, wheels and arguments", labels
        )


CHECKPOINT_DOCKERFILE = f"""\
ARG AGENT_IMAGE
FROM ${{AGENT_IMAGE}}
COPY checkpoint.pt {CHECKPOINT_PATH}
ENV {CHECKPOINT_ENV}={CHECKPOINT_PATH}
"""


def _build_checkpoint_image(
    client: docker.DockerClient,
    agent: str,
    tag: str,
    base_image: str,
    checkpoint: Path,
    *,
    requirements: list[str] | None,
    quiet: bool,
    force: bool,
) -> str:
    if not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} is not a file")
    plain = default_agent_tag(agent)
    if plain == tag:  # the checkpoint image takes the default tag: its base gets another one
        plain = plain.rsplit(":", 1)[0] + ":plain"
    plain_id = build_agent_image(
        client, agent, plain, base_image, requirements=requirements, quiet=quiet
    )
    with tempfile.TemporaryDirectory(prefix="agent-ckpt-", dir=cache_dir()) as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text(CHECKPOINT_DOCKERFILE)
        shutil.copy2(checkpoint, ctx / "checkpoint.pt")
        os.chmod(ctx / "checkpoint.pt", 0o644)  # readable by the container's uid 1000
        buildargs = {"AGENT_IMAGE": plain_id}
        return _build_if_changed(
            client, ctx, tag, buildargs, quiet, force, "same agent image and checkpoint"
        )


def image_memory(client: docker.DockerClient, tag: str) -> str | None:
    """The memory limit an image asks for (its MEMORY_LABEL), or None."""
    try:
        labels = client.images.get(tag).attrs.get("Config", {}).get("Labels") or {}
    except (ImageNotFound, APIError):
        return None
    return labels.get(MEMORY_LABEL)
