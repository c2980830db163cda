# An agent image: `python -m $AGENT_MODULE` (the agent's module, from evaluation/agents.py) as
# uid 1000, with only what the agent needs.
#
# Built by `python -m evaluation build --agent NAME [--checkpoint FILE]` from a minimal context
# (the project's sources, a `.whl/` folder of wheels that pip downloaded on the host, an optional
# `checkpoint.pt`), with the network off: nothing is fetched during the build. The context mirrors
# the repository, so where Docker Hub and PyPI are reachable the repository root works too:
#     docker build --build-arg AGENT_MODULE=agent.random_agent -t sonic-maml-agent-random .
# Written for the classic builder as well as BuildKit (no RUN --mount).

ARG BASE_IMAGE=python:3.11-slim

# ---- stage 1: a venv with the requirements and our distribution, the entry point script and the
# user uid 1000. Discarded after the build: only /opt and the user database are copied out.
FROM ${BASE_IMAGE} AS deps
LABEL sonic-maml.build=deps
ARG REQUIREMENTS="numpy gymnasium pyyaml"
ARG AGENT_MODULE=agent.random_agent
COPY . /tmp/ctx/
RUN set -eu; \
    if ls /tmp/ctx/.whl/*.whl >/dev/null 2>&1; then \
        PIP_SOURCE="--no-index --find-links /tmp/ctx/.whl"; else PIP_SOURCE=""; fi; \
    [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv; \
    /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        $PIP_SOURCE $REQUIREMENTS; \
    /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-deps \
        $PIP_SOURCE /tmp/ctx; \
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    rm -rf "$site/torch/include" "$site/torch/test" "$site/torch/share/cmake"; \
    /opt/venv/bin/python -m pip uninstall -y -q pip setuptools 2>/dev/null || true; \
    mkdir -p /opt/agent; \
    if [ -f /tmp/ctx/checkpoint.pt ]; then \
        cp /tmp/ctx/checkpoint.pt /opt/agent/checkpoint.pt; \
        CKPT_LINE='export AGENT_CHECKPOINT="${AGENT_CHECKPOINT:-/opt/agent/checkpoint.pt}"'; \
    else CKPT_LINE=''; fi; \
    printf '#!/bin/sh\n%s\nexec /opt/venv/bin/python -m %s "$@"\n' "$CKPT_LINE" "$AGENT_MODULE" \
        > /opt/agent/entrypoint; \
    chmod 755 /opt/agent/entrypoint; \
    chmod -R a+rX /opt/venv /opt/agent; \
    getent passwd 1000 >/dev/null || \
        useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /bin/sh agent

# ---- stage 2: the agent image. Few steps on purpose: with the vfs storage driver every step
# copies the whole file system.
FROM ${BASE_IMAGE}
COPY --from=deps /opt /opt
COPY --from=deps /etc/passwd /etc/group /etc/
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
ENTRYPOINT ["/opt/agent/entrypoint"]
