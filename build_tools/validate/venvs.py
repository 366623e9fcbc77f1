"""The two sides of a comparison: isolated venvs that differ only in the MLX wheels.

stock    PyPI `mlx==V` + `mlx-cpu==V` (`mlx-metal==V` on macOS), downloaded once into the work dir
patched  the same stock frontend + the patched backend wheel from wheels/
         (or a patched frontend too, when wheels/ has one: full packaging)

Both sides get the same numpy wheel from the same directory, and install with
`--no-index` from local files only, so nothing but the MLX wheels differs.
Venvs are reused while the set of installed wheel files (by sha256) is the same.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from ..digest import sha256_file
from ..errors import MlxForkError
from ..libmlx_probe import parse_probe, probe_command
from ..proc import run, say
from ..stockwheels import host_stock_wheels
from ..tools import env_tool
from ..virtualenvs import create_venv, venv_python
from ..wheeldir import patched_wheels, same_build_frontend

FRONTEND_DIST = "mlx"
# The backend wheel a plain install resolves to on this machine: mlx-metal on macOS,
# mlx-cpu on Linux; `--platform linux-cuda` selects mlx-cuda-13 (on a GPU machine).
BACKEND_DIST = "mlx_metal" if sys.platform == "darwin" else "mlx_cpu"
BACKEND_REQ = BACKEND_DIST.replace("_", "-")

# Written into a side's site-packages when the CUDA libraries come from another
# environment (--cuda-libraries): that environment's site-packages is appended to
# sys.path (the nvidia-* packages, numpy) and the CUDA libraries libmlx NEEDs are
# loaded first, by SONAME, because libmlx's RUNPATH names nvidia/<lib>/lib
# folders of its own site-packages. Both sides get the same file.
CUDA_SITE_PTH = "mlx_fork_cuda_site.pth"
CUDA_PRELOAD = "mlx_fork_cuda_preload.py"
_PRELOAD_SOURCE = r'''"""Loads the CUDA libraries of {site} before mlx (written by mlx-fork validate)."""
import ctypes, glob, os
_SITE = {site!r}
for _pattern in ("cu13/lib/libcudart.so.*", "cu13/lib/libcublas.so.*", "cu13/lib/libcublasLt.so.*",
                 "cu13/lib/libnvrtc.so.*", "cu13/lib/libcufft.so.*", "cudnn/lib/libcudnn.so.*",
                 "nccl/lib/libnccl.so.*", "cublas/lib/libcublas.so.*", "cublas/lib/libcublasLt.so.*",
                 "cuda_nvrtc/lib/libnvrtc.so.*", "cuda_runtime/lib/libcudart.so.*"):
    for _path in sorted(glob.glob(os.path.join(_SITE, "nvidia", _pattern))):
        try:
            ctypes.CDLL(_path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass
'''


def backend_dist(platform_name: str) -> str:
    """The backend wheel's distribution name (wheel file spelling) for a validate platform."""
    if platform_name == "linux-cuda":
        from ..profiles import get_profile

        return get_profile("linux-cuda").backend_dist.replace("-", "_")
    return BACKEND_DIST


def backend_kind(platform_name: str) -> str:
    """The backend a validate platform runs: "cuda", else the host's stock backend ("metal" or "cpu")."""
    if platform_name == "linux-cuda":
        return "cuda"
    return "metal" if sys.platform == "darwin" else "cpu"


def platform_tag() -> str:
    """Names report directories: reports/<base>-<platform>."""
    machine = platform.machine().lower() or "unknown"
    return f"{sys.platform}-{machine}"


@dataclass(frozen=True)
class Side:
    name: str  # "stock" or "patched"
    python: Path  # the venv's interpreter (never resolved: that would leave the venv)
    venv: Path
    wheels: tuple[str, ...]  # wheel file names installed
    probe: dict[str, Any] = field(default_factory=dict)  # what the interpreter reports (see side_facts)

    @property
    def mlx_version(self) -> str:
        return str(self.probe.get("mlx_version", "?"))

    @property
    def libmlx_sha256(self) -> str:
        return str(self.probe.get("libmlx_sha256", ""))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["python"] = str(self.python)
        data["venv"] = str(self.venv)
        return data


def side_facts(answer: dict[str, Any]) -> dict[str, Any]:
    """What a side records of the libmlx probe's answer (libmlx_probe.py): which MLX it loads, and its build."""
    provenance = answer.get("provenance")
    summary = None
    if isinstance(provenance, dict):
        # mlx-fork wheels carry mlx/lib/mlx-fork.json: the build's inputs, including the applied patches.
        inputs = provenance.get("inputs", {})
        summary = {"label": provenance.get("label"), "packaging": inputs.get("packaging"),
                   "patches": inputs.get("patches", []), "inputs_sha256": provenance.get("inputs_sha256")}
    versions = answer.get("distributions", {})
    return {
        "python": answer.get("python"),
        "mlx_version": answer.get("version"),
        "mlx": versions.get("mlx"), "mlx_cpu": versions.get("mlx-cpu"), "mlx_metal": versions.get("mlx-metal"),
        "numpy": versions.get("numpy"),
        "libmlx_sha256": answer.get("installed_sha256") or "",
        "default_device": answer.get("default_device"),
        "gguf": answer.get("gguf"),
        "provenance": summary,
    }




def _compatible(path: Path) -> bool:
    """Rough platform filter: this interpreter and Linux x86_64/aarch64 or pure wheels."""
    parts = path.name[:-4].split("-")
    py, plat = parts[-3], parts[-1]
    cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
    if py not in (cp, "py3"):
        return False
    return plat == "any" or platform.machine() in plat


def find_patched_wheels(wheels: Path, version: str, backend_name: str = BACKEND_DIST) -> tuple[Path, Path | None]:
    """(backend wheel, frontend wheel or None): ours (wheeldir.py) of release `version` in `wheels`, searched recursively.

    Several builds of one release: the newest file wins (it is what `mlx-fork build` just wrote).
    """
    if not wheels.is_dir():
        raise MlxForkError(
            f"no wheel directory {wheels}",
            hint="run `mlx-fork build --base B` first, or pass --wheels DIR",
        )

    ours = [w for w in patched_wheels(wheels, version, recursive=True) if _compatible(w.path)]
    backend = next((w for w in ours if w.dist == canonicalize_name(backend_name)), None)
    if backend is None:
        raise MlxForkError(
            f"no {backend_name} wheel of release {version} for this platform under {wheels}",
            hint="run `mlx-fork build --base B` (it writes wheels/), or pass --wheels DIR",
        )
    # The frontend must come from the same build (full packaging: same version and label);
    # an unlabelled frontend is the stock one mirrored next to an overlay backend.
    frontend = next(iter(same_build_frontend(ours, backend)), None)
    return backend.path, frontend.path if frontend else None


def _requirement_files(stock_dir: Path, version: str, backend: str = BACKEND_DIST,
                       numpy: bool = True) -> tuple[Path, Path, Path | None]:
    def one(prefix: str) -> Path:
        found = sorted(p for p in stock_dir.glob(f"{prefix}*.whl") if _compatible(p))
        if not found:
            raise MlxForkError(f"no {prefix}*.whl for this interpreter in {stock_dir}")
        return found[-1]

    return (one(f"{FRONTEND_DIST}-{version}-"), one(f"{backend}-{version}-"),
            one("numpy-") if numpy else None)


def make_side(name: str, venv: Path, wheel_files: list[Path], work: Path, fresh: bool = False,
              libmlx: Path | None = None, cuda_site: Path | None = None) -> Side:
    """Create (or reuse) a venv with exactly these wheels installed, then probe it.

    `libmlx`: a library copied over the installed one afterwards (a quick check of a
    freshly built libmlx of the same version; not how users install, see --libmlx).
    """
    stamp = venv / "mlx-fork-wheels.json"
    wanted = sorted(f"{p.name} {sha256_file(p)}" for p in wheel_files)
    if libmlx is not None:
        wanted.append(f"libmlx {sha256_file(libmlx)}")
    if cuda_site is not None:
        wanted.append(f"cuda-libraries {cuda_site}")
    python = venv_python(venv)
    reuse = (
        not fresh and python.exists() and stamp.is_file()
        and json.loads(stamp.read_text(encoding="utf-8")) == wanted
    )
    if not reuse:
        say(f"{name}: creating venv {venv}")
        # No pip inside the venv: this interpreter's pip installs into it (--python), so
        # interpreters whose base has no ensurepip (many Linux images) work too.
        create_venv(venv, with_pip=False)
        run(
            [*env_tool("pip"), "--python", str(python), "install", "--disable-pip-version-check",
             "--no-index", "--no-deps", *[str(p) for p in wheel_files]],
            step=f"install wheels into the {name} venv", log=work / "logs" / f"venv-{name}.log",
        )
        if libmlx is not None:
            libs = sorted(venv.glob("lib/python3*/site-packages/mlx/lib/libmlx.*"))
            if not libs:
                raise MlxForkError(f"no installed libmlx in the {name} venv to replace")
            shutil.copyfile(libmlx, libs[0])
        if cuda_site is not None:
            _link_cuda_site(venv, cuda_site)
        stamp.write_text(json.dumps(wanted), encoding="utf-8")
    proc = run(probe_command(python, isolated=False, gguf=True), step=f"import mlx in the {name} venv", check=False)
    if proc.returncode != 0:
        raise MlxForkError(
            f"{name} venv cannot import mlx.core (exit {proc.returncode})",
            hint=(proc.stderr or proc.stdout).strip().splitlines()[-1] if (proc.stderr or proc.stdout) else None,
        )
    probe = side_facts(parse_probe(proc.stdout))
    return Side(name, python, venv, tuple(p.name for p in wheel_files), probe)


def _link_cuda_site(venv: Path, site: Path) -> None:
    site_packages = sorted(venv.glob("lib/python3*/site-packages"))
    if not site_packages:
        raise MlxForkError(f"{venv} has no site-packages")
    if not (site / "nvidia").is_dir():
        raise MlxForkError(f"--cuda-libraries {site}: no nvidia/ packages there",
                           hint="give the site-packages that holds nvidia-cublas, nvidia-cudnn-cu13, ...")
    (site_packages[0] / CUDA_PRELOAD).write_text(_PRELOAD_SOURCE.format(site=str(site)), encoding="utf-8")
    # .pth lines: a path is appended to sys.path; a line starting with "import" runs.
    (site_packages[0] / CUDA_SITE_PTH).write_text(f"{site}\nimport {CUDA_PRELOAD[:-3]}\n", encoding="utf-8")


def check_pins(files: list[Path], pins: dict[str, str]) -> None:
    """Fail closed when a stock wheel differs from its sha256 pin in base.toml."""
    for path in files:
        want = pins.get(path.name)
        if want and sha256_file(path) != want:
            raise MlxForkError(
                f"stock wheel {path.name} does not match its sha256 pin in base.toml",
                hint=f"delete {path} and run again; if PyPI really serves different bytes, investigate first",
            )


def prepare_sides(version: str, work: Path, wheels: Path | None, fresh: bool = False,
                  stock_only: bool = False, pins: dict[str, str] | None = None,
                  libmlx: Path | None = None, platform_name: str = "auto",
                  cuda_site: Path | None = None,
                  extra_wheels: Sequence[Path] = ()) -> tuple[Side, Side, list[str]]:
    """Both sides plus warnings for the report (e.g. 'patched side runs stock wheels').

    `extra_wheels` go into both venvs alike (mlx-fork soak: the pinned mlx-lm wheel).
    """
    notes: list[str] = []
    backend_name = backend_dist(platform_name)
    with_numpy = cuda_site is None  # else numpy comes from that environment, the same for both sides
    stock_dir = host_stock_wheels(work, version, backend_name, numpy=with_numpy)
    frontend, backend, numpy = _requirement_files(stock_dir, version, backend_name, numpy=with_numpy)
    check_pins([frontend, backend], pins or {})
    extra = ([numpy] if numpy is not None else []) + list(extra_wheels)
    if cuda_site is not None:
        notes.append(f"CUDA libraries and numpy from an existing environment ({cuda_site.name}), the same for "
                     "both sides; libmlx's RUNPATH would look for them in the venv's own nvidia/ folders")
    stock = make_side("stock", work / "venv-stock", [frontend, backend, *extra], work, fresh, cuda_site=cuda_site)
    if stock_only or wheels is None:
        if libmlx is None:
            notes.append("patched side uses the stock PyPI wheels (no patched wheels given): a stock-vs-stock run")
        p_backend, p_frontend = backend, None
    else:
        p_backend, p_frontend = find_patched_wheels(wheels, version, backend_name)
    if libmlx is not None:
        notes.append(f"patched side: stock wheels with libmlx.so replaced by a given library (sha256 "
                     f"{sha256_file(libmlx)[:16]}); a development check, not an installable build")
    patched = make_side("patched", work / "venv-patched", [p_frontend or frontend, p_backend, *extra], work, fresh,
                        libmlx=libmlx, cuda_site=cuda_site)
    if patched.libmlx_sha256 and patched.libmlx_sha256 == stock.libmlx_sha256:
        notes.append("patched side loads the same libmlx as stock (identical sha256): results compare stock with itself")
    elif "+" not in patched.mlx_version:
        notes.append(f"patched libmlx reports version {patched.mlx_version} without a local label")
    return stock, patched, notes
