"""The project as an agent image's build context needs it, from a checkout or an installed wheel.

From a checkout the context gets the repository's `pyproject.toml`, `README.md` and top-level
`Dockerfile`. An installed package has none of them beside its sources: it carries the Dockerfile
as package data (`evaluation/docker/Dockerfile`, kept equal to the top-level one by a test) and the
context gets a small `pyproject.toml` that builds the same packages, at the installed version.

The pins live in pyproject.toml only: `declared_requirement("torch")` reads the project's own
requirement on a package (from pyproject.toml in a checkout, from the installed metadata
otherwise), e.g. the agent images' torch.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import tomllib
from pathlib import Path

DIST = "sonic-maml"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout, or site-packages
SOURCE_PACKAGES = ["sonic_common", "roms_setup", "evaluation", "agent", "meta_train"]
PACKAGED_DOCKERFILE = Path(__file__).resolve().with_name("Dockerfile")
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)")


def in_checkout() -> bool:
    return (SOURCE_ROOT / "pyproject.toml").is_file() and (SOURCE_ROOT / "Dockerfile").is_file()


def declared_requirements() -> list[str]:
    """The project's dependencies (no extras), as pyproject.toml declares them."""
    if in_checkout():
        data = tomllib.loads((SOURCE_ROOT / "pyproject.toml").read_text())
        return list(data["project"]["dependencies"])
    reqs = importlib.metadata.requires(DIST) or []
    return [r for r in reqs if "extra ==" not in r]


def declared_requirement(name: str) -> str:
    """The project's requirement on `name` without extras or markers: `torch==2.13.0`."""
    wanted = name.lower().replace("_", "-")
    for req in declared_requirements():
        match = _NAME.fullmatch(req.split(";")[0])
        if match and match.group(1).lower().replace("_", "-") == wanted:
            return match.group(1) + match.group(3).replace(" ", "")
    raise LookupError(f"pyproject.toml declares no dependency on {name}")


def generated_pyproject() -> str:
    """A pyproject.toml that builds the installed packages (for a context made from a wheel)."""
    version = importlib.metadata.version(DIST)
    include = ", ".join(f'"{p}*"' for p in SOURCE_PACKAGES)
    return f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "{version}"
requires-python = ">=3.11"

[tool.setuptools.packages.find]
include = [{include}]
namespaces = true

[tool.setuptools.package-data]
"*" = ["*.yaml", "*.csv", "Dockerfile"]
"""


def copy_build_sources(dest: Path) -> None:
    """The Dockerfile, the packages and what `pip install` of them needs, into `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for pkg in SOURCE_PACKAGES:
        if (SOURCE_ROOT / pkg).is_dir():
            shutil.copytree(SOURCE_ROOT / pkg, dest / pkg, ignore=ignore)
    if in_checkout():
        shutil.copy2(SOURCE_ROOT / "Dockerfile", dest / "Dockerfile")
        shutil.copy2(SOURCE_ROOT / "pyproject.toml", dest / "pyproject.toml")
    else:
        shutil.copy2(PACKAGED_DOCKERFILE, dest / "Dockerfile")
        (dest / "pyproject.toml").write_text(generated_pyproject())
    readme = SOURCE_ROOT / "README.md"
    if readme.is_file():
        shutil.copy2(readme, dest / "README.md")
    else:
        (dest / "README.md").write_text(f"{DIST}\n")
