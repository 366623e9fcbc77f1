"""Stock MLX wheels from PyPI: downloaded once into the work dir, checked against base.toml's sha256 pins.

The stock backend wheel (`mlx-cpu`, `mlx-metal` per macOS deployment target,
`mlx-cuda-13`) is what an overlay starts from, what the ABI gate compares with,
and where the Metal checks take metal-cpp from; the stock `mlx` frontend wheels
are mirrored into wheels/ so it works as a self-contained index. Every download
goes through `download_wheels` (pip, binary only, no dependencies).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .bases import BasePin
from .digest import sha256_file
from .errors import MlxForkError
from .paths import work_dir
from .proc import run, say
from .profiles import Profile
from .tools import env_tool
from .wheelfile import escape_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Python versions upstream publishes `mlx` frontend wheels for.
FRONTEND_PYTHONS: tuple[str, ...] = ("3.10", "3.11", "3.12", "3.13", "3.14")


def download_wheels(requirements: Sequence[str], dest: Path, *, platform_tag: str | None = None,
                    python: str | None = None, step: str | None = None, log: Path | None = None) -> None:
    """`pip download` binary wheels of `requirements` (no dependencies) into `dest`.

    `platform_tag` / `python`: for another machine or interpreter than this one.
    """
    cmd = [*env_tool("pip"), "download", "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:"]
    if platform_tag:
        cmd += ["--platform", platform_tag]
    if python:
        cmd += ["--python-version", python]
    cmd += ["-d", str(dest), *requirements]
    where = f" ({platform_tag})" if platform_tag else ""
    run(cmd, step=step or f"download {' '.join(requirements)}{where}", log=log)


def stock_pins(base: BasePin) -> dict[str, str]:
    """filename -> sha256 of the stock wheels pinned in base.toml ([[stock_wheels]])."""
    data = tomllib.loads((base.directory / "base.toml").read_text(encoding="utf-8"))
    return {str(w["filename"]): str(w["sha256"]) for w in data.get("stock_wheels", [])}


def stock_cache(work: Path, base: BasePin) -> Path:
    return work / "stock" / base.version


def stock_backend_filename(base: BasePin, profile: Profile) -> str:
    return f"{escape_name(profile.backend_dist)}-{base.version}-py3-none-{profile.platform_tag}.whl"


def fetch_stock_wheel(base: BasePin, profile: Profile, work: Path | None = None) -> Path:
    """The stock backend wheel for `profile`, downloaded once into the work dir and hash-checked."""
    work = work or work_dir()
    filename = stock_backend_filename(base, profile)
    pins = stock_pins(base)
    cache = stock_cache(work, base)
    path = cache / filename
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        say(f"downloading stock {filename} from PyPI")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            download_wheels([f"{profile.backend_dist}=={base.version}"], Path(tmp), platform_tag=profile.platform_tag)
            got = Path(tmp) / filename
            if not got.is_file():
                raise MlxForkError(f"pip did not download {filename}",
                                   hint=f"files: {[p.name for p in Path(tmp).iterdir()]}")
            got.replace(path)
    digest = sha256_file(path)
    expected = pins.get(filename)
    if expected is None:
        raise MlxForkError(
            f"no sha256 pinned for {filename} in {base.directory / 'base.toml'}",
            hint=f'add [[stock_wheels]] filename = "{filename}" sha256 = "{digest}" after checking it on PyPI',
        )
    if digest != expected:
        raise MlxForkError(
            f"{path}: sha256 {digest} does not match the pin {expected}",
            hint="delete the cached file to download it again; if PyPI's file really changed, stop and investigate",
        )
    return path


def host_stock_wheels(work: Path, version: str, backend: str, numpy: bool = True) -> Path:
    """The stock `mlx` and `backend` wheels of `version` for this machine and interpreter, and numpy, downloaded once.

    validate installs them into its stock side (and the stock frontend into the patched side).
    """
    dest = work / "stock-wheels" / version
    want = [f"mlx-{version}-", f"{backend}-{version}-"] + (["numpy-"] if numpy else [])
    have = [p.name for p in dest.glob("*.whl")] if dest.is_dir() else []
    if all(any(n.startswith(w) for n in have) for w in want):
        return dest
    requirement = backend.replace("_", "-")
    say(f"downloading stock mlx=={version} {requirement}=={version} and numpy from PyPI into {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    download_wheels([f"mlx=={version}", f"{requirement}=={version}", "numpy<3"], dest,
                    step="download stock wheels", log=work / "logs" / "stock-download.log")
    return dest


def fetch_frontend_wheels(base: BasePin, profile: Profile, work: Path | None = None,
                          pythons: tuple[str, ...] = FRONTEND_PYTHONS) -> list[Path]:
    """Stock `mlx` frontend wheels (one per Python), so wheels/ works as a self-contained index."""
    work = work or work_dir()
    cache = stock_cache(work, base) / "frontend" / profile.platform_tag
    cache.mkdir(parents=True, exist_ok=True)
    found: list[Path] = []
    for python in pythons:
        tag = "cp" + python.replace(".", "")
        have = sorted(cache.glob(f"mlx-{base.version}-{tag}-*.whl"))
        if not have:
            try:
                download_wheels([f"mlx=={base.version}"], cache, platform_tag=profile.platform_tag, python=python)
            except MlxForkError:
                say(f"note: no stock mlx {base.version} frontend wheel for Python {python} on {profile.platform_tag}")
                continue
            have = sorted(cache.glob(f"mlx-{base.version}-{tag}-*.whl"))
        found.extend(have)
    return found
