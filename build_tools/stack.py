"""Stage 7: a venvstacks framework layer that carries the patched MLX wheels.

`mlx-fork stack` writes (or updates) a venvstacks stack specification,
`venvstacks.toml`, with a framework layer `mlx` whose requirements pin the
patched backend wheel from wheels/ by its full local version
(`mlx-cpu==0.31.1+fork.N.h...`), next to the frontend `mlx==0.31.1` (stock, or
ours after a --full build). Because the pin names a version only our wheel has,
venvstacks' own lock (`uv pip compile --generate-hashes` with wheels/ as
--local-wheels) can only resolve it to that wheel and records its sha256; the
layer is then installed from the lock with hash checking, like any other layer.

With --lock, --build and --export it also drives venvstacks, checks that the
layer lock records exactly the sha256 of the wheel in wheels/, and that the
exported layer's Python loads the patched libmlx: `mx.__version__` carries the
label, the libmlx mapped into the process is the one inside the exported layer,
its sha256 is the one in the provenance file `mlx/lib/mlx-fork.json`, and that
provenance equals the wheel's.

venvstacks makes the runtime layer from a python-build-standalone download.
Where that cannot be fetched, `--seed-runtime PREFIX` copies a local CPython
installation into the runtime layer's build environment instead, so locking,
building and exporting the framework layer can still be exercised; such a
runtime layer is a stand-in and must not be published.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from . import wheeldir
from .bases import load_base
from .digest import sha256_file
from .errors import MlxForkError
from .libmlx_probe import parse_probe, probe_command
from .paths import PRIMARY_BASE, project_root, wheels_dir
from .proc import run, say
from .tools import env_tool

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROVENANCE = "mlx/lib/mlx-fork.json"
FRONTEND = "mlx"
BACKENDS: dict[str, tuple[str, ...]] = {
    # venvstacks target platform -> backend distributions that can serve it
    "linux_x86_64": ("mlx-cpu", "mlx-cuda-12", "mlx-cuda-13"),
    "linux_aarch64": ("mlx-cpu", "mlx-cuda-12", "mlx-cuda-13"),
    "macosx_arm64": ("mlx-metal",),
}
DEFAULT_LAYER = "mlx"
SPEC_NAME = "venvstacks.toml"
GENERATED_BY = "# Framework layer `{layer}` written by `mlx-fork stack`; rerun it after a new build."


# ---------------------------------------------------------------- wheels

@dataclass(frozen=True)
class PatchedWheel:
    path: Path
    dist: str  # canonical name: mlx-cpu, mlx-metal, mlx-cuda-12, mlx (frontend)
    version: Version
    platform_tag: str  # last wheel tag, e.g. manylinux_2_35_x86_64
    sha256: str

    @property
    def target(self) -> str:
        """The venvstacks target platform this wheel installs on."""
        return venvstacks_platform(self.platform_tag)

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


def venvstacks_platform(platform_tag: str) -> str:
    if platform_tag.startswith("macosx_") and platform_tag.endswith("_arm64"):
        return "macosx_arm64"
    for arch in ("x86_64", "aarch64"):
        if platform_tag.endswith(f"_{arch}") and ("linux" in platform_tag):
            return f"linux_{arch}"
    raise MlxForkError(f"no venvstacks target platform for wheel platform {platform_tag!r}")


def host_platform() -> str:
    """The venvstacks target platform of this machine (venvstacks only builds for the host)."""
    import platform as _platform

    machine = _platform.machine().lower()
    if sys.platform == "darwin" and machine == "arm64":
        return "macosx_arm64"
    if sys.platform.startswith("linux") and machine in ("x86_64", "aarch64"):
        return f"linux_{machine}"
    raise MlxForkError("venvstacks layers with MLX are made on Linux x86_64/aarch64 or macOS arm64, "
                       f"not {sys.platform}/{machine}")




def read_provenance(wheel: Path) -> dict[str, Any] | None:
    with zipfile.ZipFile(wheel) as zf:
        try:
            provenance: dict[str, Any] = json.loads(zf.read(PROVENANCE))
        except KeyError:
            return None
    return provenance


def patched_wheels(directory: Path, base_version: str) -> list[PatchedWheel]:
    """Our wheels (wheeldir.py) in `directory` of this MLX version, frontends and backends, newest first."""
    known = {FRONTEND, *(d for ds in BACKENDS.values() for d in ds)}
    return [PatchedWheel(w.path, w.dist, w.version, w.platform_tag, sha256_file(w.path))
            for w in wheeldir.patched_wheels(directory, base_version) if w.dist in known]


def _macos_target(platform_tag: str) -> tuple[int, int]:
    match = re.match(r"macosx_(\d+)_(\d+)_", platform_tag)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def choose_backend(wheels: list[PatchedWheel], target: str, backend: str | None) -> PatchedWheel:
    """The patched backend wheel for `target`: the newest build; on macOS the lowest deployment target."""
    wanted = (str(canonicalize_name(backend)),) if backend else BACKENDS[target]
    candidates = [w for w in wheels if w.dist in wanted and w.target == target]
    if not candidates:
        have = ", ".join(sorted({f"{w.dist} ({w.target})" for w in wheels if w.dist != FRONTEND})) or "none"
        raise MlxForkError(
            f"no patched {'/'.join(wanted)} wheel for {target} in wheels/ (patched backend wheels there: {have})",
            hint="run `mlx-fork build` first (on the machine the layer is for), or pass --wheels DIR",
        )
    if backend is None:
        # One backend per layer: the first kind in preference order that exists.
        for dist in wanted:
            if any(w.dist == dist for w in candidates):
                candidates = [w for w in candidates if w.dist == dist]
                break
    # Newest build first (the list is sorted so; min keeps the first of equals).
    # On macOS each deployment target is its own build with its own label; a
    # wheel built for 14.0 runs on every later macOS, so prefer the widest reach.
    return min(candidates, key=lambda w: _macos_target(w.platform_tag))


def choose_frontend(wheels: list[PatchedWheel], backend: PatchedWheel) -> PatchedWheel | None:
    """Our frontend wheel with the backend's label (a --full build), if there is one."""
    return next((w for w in wheeldir.same_build_frontend(wheels, backend) if w.target == backend.target), None)


# ---------------------------------------------------------------- spec

@dataclass
class LayerPlan:
    base: str
    layer: str
    runtime_name: str
    python_implementation: str
    target: str
    backend: PatchedWheel
    frontend: PatchedWheel | None

    @property
    def framework_env(self) -> str:
        return f"framework-{self.layer}"

    @property
    def requirements(self) -> list[str]:
        front = self.frontend.requirement if self.frontend else f"{FRONTEND}=={self.backend.version.public}"
        return [front, self.backend.requirement]


def default_python_implementation() -> str:
    """cpython@<this interpreter's X.Y>.<newest patch release python-build-standalone has>."""
    major, minor = sys.version_info[:2]
    micro = sys.version_info[2]
    try:
        from pbs_installer._versions import (
            PYTHON_VERSIONS,  # venvstacks' own download table
        )

        micros = [v.micro for v in PYTHON_VERSIONS
                  if v.implementation == "cpython" and (v.major, v.minor) == (major, minor)
                  and not getattr(v, "freethreaded", False)]
        if micros:
            micro = max(micros)
    except Exception:  # table layout is private to pbs_installer; fall back to this interpreter
        pass
    return f"cpython@{major}.{minor}.{micro}"


def _runtime_name(python_implementation: str) -> str:
    version = python_implementation.partition("@")[2]
    return "cpython-" + ".".join(version.split(".")[:2])


def plan_layer(
    base: str,
    wheels: Path,
    *,
    layer: str = DEFAULT_LAYER,
    target: str | None = None,
    backend: str | None = None,
    python_implementation: str | None = None,
    existing: dict[str, Any] | None = None,
) -> LayerPlan:
    pin = load_base(base)
    found = patched_wheels(wheels, pin.version)
    target = target or host_platform()
    chosen = choose_backend(found, target, backend)
    runtime_name, implementation = None, python_implementation
    if existing and implementation is None:
        # Keep the runtime the existing framework layer already uses.
        for fw in existing.get("frameworks", []):
            if fw.get("name") == layer and fw.get("runtime"):
                runtime_name = fw["runtime"]
        for rt in existing.get("runtimes", []):
            if rt.get("name") == runtime_name:
                implementation = rt.get("python_implementation") or rt.get("fully_versioned_name")
    implementation = implementation or default_python_implementation()
    return LayerPlan(
        base=base,
        layer=layer,
        runtime_name=runtime_name or _runtime_name(implementation),
        python_implementation=implementation,
        target=target,
        backend=chosen,
        frontend=choose_frontend(found, chosen),
    )


def merge_spec(existing: dict[str, Any], plan: LayerPlan) -> dict[str, Any]:
    """`existing` with our runtime and framework layer added or replaced; other layers kept."""
    spec = {key: list(value) if isinstance(value, list) else value for key, value in existing.items()}
    runtimes = [dict(rt) for rt in spec.get("runtimes", [])]
    frameworks = [dict(fw) for fw in spec.get("frameworks", [])]
    runtime = next((rt for rt in runtimes if rt.get("name") == plan.runtime_name), None)
    if runtime is None:
        runtime = {"name": plan.runtime_name, "python_implementation": plan.python_implementation,
                   "requirements": []}
        runtimes.append(runtime)
    platforms = set(runtime.get("platforms", [])) | {plan.target}
    runtime["platforms"] = sorted(platforms)
    layer = {
        "name": plan.layer,
        "runtime": plan.runtime_name,
        "requirements": plan.requirements,
        "platforms": [plan.target],
    }
    frameworks = [fw for fw in frameworks if fw.get("name") != plan.layer] + [layer]
    spec["runtimes"] = runtimes
    spec["frameworks"] = frameworks
    return spec


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise MlxForkError(f"cannot write {value!r} to {SPEC_NAME}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def dump_spec(spec: dict[str, Any], plan: LayerPlan, wheels_rel: str) -> str:
    """TOML text: plain keys first, then [[runtimes]], [[frameworks]], [[applications]] (and any other arrays of tables)."""
    lines = [
        GENERATED_BY.format(layer=plan.layer),
        "# The patched wheels come from a local wheel directory, so lock and build with:",
        f"#   venvstacks lock {SPEC_NAME} --local-wheels {wheels_rel}",
        f"#   venvstacks build {SPEC_NAME} --local-wheels {wheels_rel}",
        "# Other layers in this file are kept as they are when mlx-fork updates it (comments are not).",
        "",
    ]
    tables = {k: v for k, v in spec.items() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)}
    for key, value in spec.items():
        if key not in tables:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    ordered: list[str] = [k for k in ("runtimes", "frameworks", "applications") if k in tables]
    ordered += [k for k in tables if k not in ordered]
    for key in ordered:
        for table in tables[key]:
            lines.append(f"[[{_toml_key(key)}]]")
            for name, value in table.items():
                lines.append(f"{_toml_key(name)} = {_toml_value(value)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_spec(spec_path: Path, plan: LayerPlan, wheels: Path) -> dict[str, Any]:
    existing: dict[str, Any] = {}
    if spec_path.is_file():
        try:
            existing = tomllib.loads(spec_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise MlxForkError(f"{spec_path}: not valid TOML: {exc}") from exc
    spec = merge_spec(existing, plan)
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec_path.with_name(spec_path.name + ".tmp")
    tmp.write_text(dump_spec(spec, plan, _relpath(wheels, spec_path.parent)), encoding="utf-8")
    tmp.replace(spec_path)
    return spec


def _relpath(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # other drive
        return str(path.resolve())


# ---------------------------------------------------------------- venvstacks

def venvstacks_command() -> list[str]:
    # venvstacks runs its tools as `python -Im uv`, so it needs an environment of
    # its own (PYTHONPATH is ignored): MLX_FORK_VENVSTACKS names its executable.
    # Otherwise it is the one installed beside mlx-fork (`pip install -e '.[stack]'`).
    exe = os.environ.get("MLX_FORK_VENVSTACKS")
    if exe:
        return [exe]
    try:
        return env_tool("venvstacks")
    except MlxForkError as exc:
        raise MlxForkError(
            exc.message + " and MLX_FORK_VENVSTACKS is not set",
            hint=f"{exc.hint}  (pdm[locked] pins the hishel/unearth versions pdm works with)",
        ) from None


def runtime_download_url(python_implementation: str) -> str | None:
    """The python-build-standalone archive venvstacks would fetch for the runtime (asked of its pbs_installer)."""
    exe = Path(venvstacks_command()[0])
    python = exe.parent / "python" if exe.name == "venvstacks" and (exe.parent / "python").exists() else Path(sys.executable)
    version = python_implementation.partition("@")[2]
    code = ("import sys; from pbs_installer import get_download_link; "
            "print(get_download_link(sys.argv[1], implementation='cpython', build_dir=False)[1][0])")
    try:
        proc = run([python, "-c", code, version], step="pbs_installer download link", check=False, timeout=60)
    except (MlxForkError, OSError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def run_venvstacks(args: list[str], spec_dir: Path, log: Path) -> None:
    cmd = venvstacks_command() + args
    say(f"running {' '.join(['venvstacks', *args])}")
    proc = run(cmd, step=f"venvstacks {args[0]}", cwd=spec_dir, env={"COLUMNS": "200"}, log=log, check=False)
    if proc.returncode != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        if "pbs_installer" in text and "ConnectError" in text:
            implementation = _runtime_implementations(spec_dir)
            urls = [u for u in map(runtime_download_url, implementation) if u]
            text += "".join(f"\nruntime download: {u}" for u in urls)
        raise MlxForkError(f"venvstacks {args[0]} failed (exit {proc.returncode})", hint=diagnose_venvstacks(text, log))


def _runtime_implementations(spec_dir: Path) -> list[str]:
    try:
        data = tomllib.loads((spec_dir / SPEC_NAME).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return [str(rt.get("python_implementation")) for rt in data.get("runtimes", []) if rt.get("python_implementation")]


def diagnose_venvstacks(log_text: str, log: Path) -> str:
    """The cause of a venvstacks failure in one line, for the failures we know."""
    if "python-build-standalone" in log_text or ("pbs_installer" in log_text and "ConnectError" in log_text):
        url = re.search(r"https://\S+?/python-build-standalone/\S+?\.tar\.gz", log_text)
        return ("the runtime layer downloads a python-build-standalone build"
                f"{' (' + url.group(0) + ')' if url else ''}, which this machine cannot fetch; "
                "use --seed-runtime PREFIX to build the framework layer against a local CPython "
                f"(stand-in runtime, not for publishing). Log: {log}")
    if "SyncSqliteStorage" in log_text or "super(type, obj)" in log_text:
        return f'pdm is installed with hishel/unearth versions it does not work with: pip install "pdm[locked]". Log: {log}'
    tail = [line for line in log_text.splitlines() if line.strip() and not line.startswith(("│", "╭", "╰"))][-5:]
    return "; ".join(tail) + f" (log: {log})"


def seed_runtime(spec_dir: Path, plan: LayerPlan, prefix: Path, build_dir: str = "_build") -> Path | None:
    """Copy a local CPython installation into the runtime layer's build environment (stand-in runtime)."""
    env_path = spec_dir / build_dir / plan.runtime_name
    if (env_path / "bin" / "python3").exists():
        return None
    version = plan.python_implementation.partition("@")[2]
    minor = ".".join(version.split(".")[:2])
    stdlib = prefix / "lib" / f"python{minor}"
    if not (prefix / "bin" / "python3").exists() or not stdlib.is_dir():
        raise MlxForkError(
            f"{prefix} is not a CPython {minor} installation prefix (needs bin/python3 and lib/python{minor})",
            hint="pass the prefix of a relocatable CPython build, e.g. a pyenv or python-build-standalone install",
        )
    if prefix.resolve() == Path("/usr"):
        raise MlxForkError("refusing to copy /usr as a runtime layer", hint="use a self-contained CPython prefix")

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        skipped = {"__pycache__"} & set(names)
        if here == stdlib:
            skipped |= {"test", "idlelib", "turtledemo"} & set(names)
        if here == stdlib / "site-packages":
            skipped |= set(names)  # the runtime layer starts empty, like a fresh python-build-standalone
        return skipped

    env_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(prefix, env_path, symlinks=True, ignore=ignore)
    stand_in_marker(spec_dir, plan, build_dir).write_text(f"{prefix}\n", encoding="utf-8")
    say(f"seeded the runtime layer {plan.runtime_name} from {prefix} (a stand-in: do not publish this stack)")
    return env_path


def stand_in_marker(spec_dir: Path, plan: LayerPlan, build_dir: str = "_build") -> Path:
    """Beside a seeded runtime build environment: venvstacks would otherwise reuse it silently."""
    return spec_dir / build_dir / f"{plan.runtime_name}.mlx-fork-stand-in"


def lock_file(spec_dir: Path, plan: LayerPlan) -> Path:
    env = plan.framework_env
    return spec_dir / "requirements" / env / f"requirements-{env}-{plan.target}.txt"


def locked_hashes(lock_text: str) -> dict[str, tuple[str, set[str]]]:
    """Lock file (pip requirements with --hash) -> {dist: (version, {sha256, ...})}."""
    joined = re.sub(r"\\\n\s*", " ", lock_text)
    result: dict[str, tuple[str, set[str]]] = {}
    for line in joined.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)(.*)$", line.strip())
        if not match:
            continue
        hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", match.group(3)))
        result[str(canonicalize_name(match.group(1)))] = (match.group(2), hashes)
    return result


def check_lock(spec_dir: Path, plan: LayerPlan) -> list[str]:
    """Problems with the layer lock: our wheels must be pinned to exactly their own sha256."""
    path = lock_file(spec_dir, plan)
    if not path.is_file():
        return [f"{path} was not written"]
    locked = locked_hashes(path.read_text(encoding="utf-8"))
    problems = []
    for wheel in filter(None, (plan.backend, plan.frontend)):
        entry = locked.get(wheel.dist)
        if entry is None:
            problems.append(f"{wheel.dist} is not in {path.name}")
            continue
        version, hashes = entry
        if Version(version) != wheel.version:
            problems.append(f"{wheel.dist}: locked {version}, wheels/ has {wheel.version}")
        if hashes != {wheel.sha256}:
            problems.append(f"{wheel.dist}: lock hashes {sorted(hashes)} != sha256 of {wheel.path.name} ({wheel.sha256})")
    return problems


@dataclass
class LayerCheck:
    probe: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def layer_python(export_dir: Path, plan: LayerPlan) -> Path:
    for name in ("bin/python", "bin/python3", "python.exe", "Scripts/python.exe"):
        candidate = export_dir / plan.framework_env / name
        if candidate.exists():
            return candidate
    raise MlxForkError(f"no Python in the exported layer {export_dir / plan.framework_env}",
                       hint="did `venvstacks local-export` run?")


def check_exported_layer(export_dir: Path, plan: LayerPlan) -> LayerCheck:
    """Run the exported framework layer's Python and prove it loads the patched libmlx."""
    python = layer_python(export_dir, plan)
    proc = run(probe_command(python, isolated=False), step="import mlx.core in the exported layer", check=False,
               timeout=300)
    check = LayerCheck()
    if proc.returncode != 0:
        check.problems.append(f"import mlx.core in the exported layer failed (exit {proc.returncode}): "
                              + (proc.stderr.strip().splitlines() or ["no output"])[-1])
        return check
    check.probe = probe = parse_probe(proc.stdout)
    expected = read_provenance(plan.backend.path)
    layer_root = (export_dir / plan.framework_env).resolve()
    if expected is None:
        check.problems.append(f"{plan.backend.path.name} has no {PROVENANCE}: not an mlx-fork wheel")
        return check
    # libmlx reports the run-time form `<version>.0+<label>`, equal under PEP 440 to the wheel's version.
    if probe["version"] != expected.get("runtime_version") or Version(probe["version"]) != plan.backend.version:
        check.problems.append(f"mx.__version__ is {probe['version']!r}; the wheel is {plan.backend.version} "
                              f"(provenance {expected.get('version')!r}): the loaded libmlx is not the patched one")
    loaded = probe.get("loaded")
    if not loaded or not Path(loaded).is_relative_to(layer_root):
        check.problems.append(f"the loaded libmlx {loaded!r} is not inside the exported layer {layer_root}")
    want_sha = expected.get("outputs", {}).get("libmlx_sha256")
    if probe.get("loaded_sha256") != want_sha:
        check.problems.append(f"loaded libmlx sha256 {probe.get('loaded_sha256')} != provenance {want_sha}")
    if probe.get("provenance") != expected:
        check.problems.append("the layer's mlx/lib/mlx-fork.json differs from the wheel's")
    elif probe.get("provenance_path") and not Path(probe["provenance_path"]).is_relative_to(layer_root):
        check.problems.append(f"provenance {probe['provenance_path']} is not inside the exported layer")
    if probe.get("value") != 15.0:
        check.problems.append(f"(a*2+1).sum() of [1,2,3] gave {probe.get('value')}, not 15.0")
    return check


# ---------------------------------------------------------------- CLI

def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stack",
        help="write/update a venvstacks framework layer with the patched wheels; optionally lock, build, export, check",
        description="Write (or update) a venvstacks stack specification whose framework layer pins the patched "
        "MLX wheels from wheels/ by their local version, so venvstacks' lock records their sha256. "
        "--lock/--build/--export run venvstacks and check the lock hashes and the exported layer.",
    )
    p.add_argument("--base", default=PRIMARY_BASE, help=f"pinned base (default {PRIMARY_BASE})")
    p.add_argument("--dir", type=Path, default=None, help="directory of venvstacks.toml (default: stack/)")
    p.add_argument("--wheels", type=Path, default=None, help="wheel directory (default: wheels/)")
    p.add_argument("--layer", default=DEFAULT_LAYER, help=f"framework layer name (default {DEFAULT_LAYER})")
    p.add_argument("--backend", default=None, help="backend distribution (default: mlx-metal on macOS, mlx-cpu on Linux)")
    p.add_argument("--python", dest="python_implementation", default=None,
                   help="runtime, e.g. cpython@3.11.13 (default: kept from the file, else this Python's X.Y)")
    p.add_argument("--lock", action="store_true", help="run `venvstacks lock` and check the recorded hashes")
    p.add_argument("--build", action="store_true", help="also run `venvstacks build` (implies --lock)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="also `venvstacks local-export` to DIR and check the layer loads the patched libmlx (implies --build)")
    p.add_argument("--no-index", action="store_true", help="resolve from the wheel directory only (no PyPI)")
    p.add_argument("--seed-runtime", type=Path, default=None, metavar="PREFIX",
                   help="offline testing: copy this CPython prefix as the runtime layer instead of downloading "
                   "python-build-standalone (the result is a stand-in, not for publishing)")
    p.set_defaults(func=_cmd_stack)


def _cmd_stack(args: argparse.Namespace) -> int:
    spec_dir = (args.dir or project_root() / "stack").resolve()
    spec_path = spec_dir / SPEC_NAME
    wheels = (args.wheels or wheels_dir()).resolve()
    if not wheels.is_dir():
        raise MlxForkError(f"{wheels} does not exist", hint="run `mlx-fork build` first")
    existing = tomllib.loads(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else None
    plan = plan_layer(args.base, wheels, layer=args.layer, backend=args.backend,
                      python_implementation=args.python_implementation, existing=existing)
    write_spec(spec_path, plan, wheels)
    say(f"{'updated' if existing else 'wrote'} {spec_path}: layer {plan.framework_env} = {', '.join(plan.requirements)} "
        f"on {plan.runtime_name} ({plan.python_implementation}), {plan.target}")
    print(spec_path)
    export = args.export.resolve() if args.export else None
    build = args.build or export is not None
    lock = args.lock or build
    if not lock:
        return 0
    index_args = ["--local-wheels", str(wheels)] + (["--no-index"] if args.no_index else [])
    log = spec_dir / "logs" / "venvstacks.log"
    if args.seed_runtime:
        seed_runtime(spec_dir, plan, args.seed_runtime.resolve())
    elif stand_in_marker(spec_dir, plan).exists():
        raise MlxForkError(
            f"the runtime layer {plan.runtime_name} in {spec_dir / '_build'} is a stand-in seeded from "
            f"{stand_in_marker(spec_dir, plan).read_text(encoding='utf-8').strip()}",
            hint=f"pass --seed-runtime again to keep testing with it, or delete {spec_dir / '_build'} "
            "to let venvstacks download the real runtime",
        )
    run_venvstacks(["lock", SPEC_NAME, *index_args], spec_dir, log)
    problems = check_lock(spec_dir, plan)
    if problems:
        raise MlxForkError("the layer lock does not pin the patched wheels by their hashes:\n  " + "\n  ".join(problems))
    say(f"lock {lock_file(spec_dir, plan).relative_to(spec_dir)} pins {plan.backend.path.name} "
        f"by sha256 {plan.backend.sha256[:16]}...")
    if not build:
        return 0
    run_venvstacks(["build", SPEC_NAME, *index_args], spec_dir, log)
    if export is None:
        return 0
    run_venvstacks(["local-export", SPEC_NAME, "--output-dir", str(export)], spec_dir, log)
    check = check_exported_layer(export, plan)
    if not check.ok:
        raise MlxForkError("the exported layer does not load the patched libmlx:\n  " + "\n  ".join(check.problems))
    say(f"exported layer {export / plan.framework_env}: mx.__version__ {check.probe['version']}, "
        f"libmlx {check.probe['loaded']} (sha256 matches the provenance)")
    return 0
