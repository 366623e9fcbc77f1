"""Pinned upstream bases: patches/<base>/base.toml.

A base pins one upstream MLX release exactly: the tag, the commit, the git tree
of that commit, where to download it, and every FetchContent dependency with how
it is provided when building offline.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MlxForkError
from .paths import patches_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Dependency:
    """One FetchContent_Declare of the upstream tree."""

    name: str  # FetchContent name (FETCHCONTENT_SOURCE_DIR_<NAME upper>)
    version: str
    upstream: str  # the URL/repository upstream CMake fetches from
    platforms: tuple[str, ...]  # build profiles that fetch it
    offline: str  # how it is provided without network; see deps.py
    consequence: str = ""  # what is lost when it is configured away
    # git-export only: the upstream repository, the pinned commit (and its tag),
    # and the subtrees exported from it, each pinned by its git tree id.
    repository: str = ""
    commit: str = ""
    tag: str = ""
    exports: tuple[Export, ...] = ()


@dataclass(frozen=True)
class Export:
    """One subtree of a git-export dependency: `path` in the repository, `to` in the exported copy."""

    path: str
    to: str
    tree: str


@dataclass(frozen=True)
class Library:
    """A prebuilt library a profile links against, from a pinned PyPI wheel (the stock wheel's Requires-Dist)."""

    name: str
    package: str  # PyPI distribution
    version: str
    wheel: str  # file name
    sha256: str
    platforms: tuple[str, ...]
    headers: tuple[str, ...]  # globs inside the wheel, each below an include/ directory
    shared: tuple[str, ...]  # globs of the shared libraries to link


@dataclass(frozen=True)
class BasePin:
    name: str  # directory name under patches/, e.g. "v0.31.1"
    version: str  # PEP 440 release, e.g. "0.31.1"
    tag: str
    commit: str
    tree: str  # git tree id of `commit`
    archive_url: str
    archive_prefix: str  # top-level directory inside the archive
    build_stage_env: str  # "stage" (MLX_BUILD_STAGE) or "package" (MLX_BUILD_*_PACKAGE)
    dependencies: tuple[Dependency, ...] = field(default_factory=tuple)
    directory: Path = Path()
    libraries: tuple[Library, ...] = field(default_factory=tuple)

    @property
    def series_file(self) -> Path:
        return self.directory / "series"


def available_bases(root: Path | None = None) -> list[str]:
    root = root or patches_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "base.toml").is_file())


def load_base(name: str, root: Path | None = None) -> BasePin:
    root = root or patches_dir()
    directory = root / name
    path = directory / "base.toml"
    if not path.is_file():
        known = ", ".join(available_bases(root)) or "none"
        raise MlxForkError(
            f"unknown base {name!r}: no {path}",
            hint=f"bases in {root}: {known}",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MlxForkError(f"{path}: not valid TOML: {exc}") from exc
    return parse_base(data, directory, path)


def parse_base(data: dict[str, Any], directory: Path, origin: Path | str = "base.toml") -> BasePin:
    try:
        base = data["base"]
        version = str(base["version"])
        commit = str(base["commit"])
        tree = str(base["tree"])
        pin = BasePin(
            name=directory.name,
            version=version,
            tag=str(base["tag"]),
            commit=commit,
            tree=tree,
            archive_url=str(base["archive_url"]),
            archive_prefix=str(base.get("archive_prefix", f"mlx-{version}")),
            build_stage_env=str(base["build_stage_env"]),
            dependencies=tuple(
                Dependency(
                    name=str(d["name"]),
                    version=str(d["version"]),
                    upstream=str(d["upstream"]),
                    platforms=tuple(d["platforms"]),
                    offline=str(d["offline"]),
                    consequence=str(d.get("consequence", "")),
                    repository=str(d.get("repository", "")),
                    commit=str(d.get("commit", "")),
                    tag=str(d.get("tag", "")),
                    exports=tuple(Export(path=str(e["path"]), to=str(e["to"]), tree=str(e["tree"]))
                                  for e in d.get("exports", [])),
                )
                for d in data.get("dependencies", [])
            ),
            libraries=tuple(
                Library(
                    name=str(lib["name"]),
                    package=str(lib["package"]),
                    version=str(lib["version"]),
                    wheel=str(lib["wheel"]),
                    sha256=str(lib["sha256"]),
                    platforms=tuple(lib["platforms"]),
                    headers=tuple(lib.get("headers", [])),
                    shared=tuple(lib.get("shared", [])),
                )
                for lib in data.get("libraries", [])
            ),
            directory=directory,
        )
    except KeyError as exc:
        raise MlxForkError(f"{origin}: missing key {exc}") from exc
    for label, value in (("commit", commit), ("tree", tree)):
        if not _SHA1.match(value):
            raise MlxForkError(f"{origin}: {label} {value!r} is not a 40-hex git object id")
    for dep in pin.dependencies:
        if dep.offline == "git-export":
            if not _SHA1.match(dep.commit) or not dep.exports or not dep.repository:
                raise MlxForkError(f"{origin}: git-export dependency {dep.name} needs repository, a 40-hex "
                                   "commit and at least one [[dependencies.exports]] entry")
            for entry in dep.exports:
                if not _SHA1.match(entry.tree):
                    raise MlxForkError(f"{origin}: {dep.name} export {entry.path}: tree {entry.tree!r} "
                                       "is not a 40-hex git object id")
    for lib in pin.libraries:
        if not re.fullmatch(r"[0-9a-f]{64}", lib.sha256):
            raise MlxForkError(f"{origin}: library {lib.name}: sha256 {lib.sha256!r} is not 64 hex digits")
    if pin.build_stage_env not in ("stage", "package"):
        raise MlxForkError(f"{origin}: build_stage_env must be 'stage' or 'package'")
    return pin
