# An agent image: `python -m $AGENT_MODULE` (the agent's module, from evaluation/agents.py) as
# uid 1000, with only what the agent needs.
#
# Built by `python -m evaluation build --agent NAME [--checkpoint FILE]` from a minimal context
# (the project's sources, a `.whl/` folder of wheels that pip downloaded on the host, an optional
# `checkpoint.pt`), with the network off: nothing is fetched during the build. The context mirrors
# the repository, so where Docker Hub and PyPI are reachable the repository root works too:
#     docker build --build-arg AGENT_MODULE=agent.random_agent -t sonic-maml-agent-random .
# Written for the classic builder as well as BuildKit (no RUN --mount, no heredocs).
#
# Layers, cheapest rebuild first: the requirements (torch: minutes) are installed in a stage of
# their own from this file and the wheels only, so a source change reuses them; the build code
# tags that stage (sonic-maml-requirements:<key>, label sonic-maml.build=requirements) and the venv
# layer made from it (<key>-venv) so that they survive the clean-up, and `python -m evaluation
# docker prune` drops them. The sources go in a stage of their own, as a `--target` install under
# /opt/agent/lib.

ARG BASE_IMAGE=python:3.11-slim

# ---- stage 1: /opt/venv with the requirements (no pip), the user uid 1000. Keyed only on the
# base image, REQUIREMENTS, this file and the wheels (`.whl*` matches nothing when there are none).
FROM ${BASE_IMAGE} AS requirements
LABEL sonic-maml.build=requirements
ARG REQUIREMENTS="numpy gymnasium pyyaml"
COPY Dockerfile .whl* /tmp/wheels/
RUN set -eu; \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
        PIP_SOURCE="--no-index --find-links /tmp/wheels"; else PIP_SOURCE=""; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        $PIP_SOURCE $REQUIREMENTS; \
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    rm -rf "$site/torch/include" "$site/torch/test" "$site/torch/share/cmake"; \
    echo /opt/agent/lib > "$site/sonic_maml_agent.pth"; \
    /opt/venv/bin/python -m pip uninstall -y -q pip setuptools 2>/dev/null || true; \
    chmod -R a+rX /opt/venv; \
    rm -rf /tmp/wheels; \
    getent passwd 1000 >/dev/null || \
        useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /bin/sh agent

# ---- stage 2: the base and /opt/venv, one layer, the same for every agent with the same
# requirements (shared by the torch images). A COPY stamps /opt and /opt/venv with the time it
# ran, so two builds making this layer at once made two different ones: the build code makes it
# once, with the requirements under their lock, and tags it (<key>-venv); builds then reuse it.
# Before `deps`: the classic builder builds every stage up to its target, needed or not.
FROM ${BASE_IMAGE} AS venv
LABEL sonic-maml.build=requirements
COPY --from=requirements /opt/venv /opt/venv

# ---- stage 3: our distribution (no dependencies) in /stage/opt/agent/lib, the entry point script,
# the user database. Labelled with the build's id: the build code deletes only its own leftovers.
FROM requirements AS deps
ARG BUILD_ID=manual
LABEL sonic-maml.build=deps sonic-maml.build-id=${BUILD_ID}
ARG AGENT_MODULE=agent.random_agent
COPY . /tmp/ctx/
RUN set -eu; \
    if ls /tmp/ctx/.whl/*.whl >/dev/null 2>&1; then \
        PIP_SOURCE="--no-index --find-links /tmp/ctx/.whl"; else PIP_SOURCE=""; fi; \
    python3 -m venv /tmp/pip; \
    /tmp/pip/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-deps \
        --target /stage/opt/agent/lib $PIP_SOURCE /tmp/ctx; \
    rm -rf /stage/opt/agent/lib/bin; \
    if [ -f /tmp/ctx/checkpoint.pt ]; then \
        cp /tmp/ctx/checkpoint.pt /stage/opt/agent/checkpoint.pt; \
        CKPT_LINE='export AGENT_CHECKPOINT="${AGENT_CHECKPOINT:-/opt/agent/checkpoint.pt}"'; \
    else CKPT_LINE=''; fi; \
    printf '#!/bin/sh\n%s\nexec /opt/venv/bin/python -m %s "$@"\n' "$CKPT_LINE" "$AGENT_MODULE" \
        > /stage/opt/agent/entrypoint; \
    chmod 755 /stage/opt/agent/entrypoint; \
    mkdir -p /stage/etc; \
    cp /etc/passwd /etc/group /stage/etc/; \
    chmod -R a+rX /stage

# ---- stage 4: the agent image. Two layers over the base on purpose: with the vfs storage driver
# every step copies the whole file system. The second, our sources, is a few MB.
FROM venv
LABEL sonic-maml.build=agent
COPY --from=deps /stage/ /
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
ENTRYPOINT ["/opt/agent/entrypoint"]
