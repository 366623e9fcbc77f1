"""`mlx-fork stack`: the venvstacks framework layer that carries the patched wheels.

Tiers:
- hermetic: wheel selection, spec writing/updating, lock parsing (no venvstacks needed);
- venvstacks accepts the written spec (venvstacks importable, or installed into
  the work dir's tools venv from PyPI);
- `venvstacks lock` offline against synthetic wheels in a local directory: the
  lock records the patched wheel's sha256. The runtime layer normally comes from
  a python-build-standalone download, which only GitHub serves; these tests
  seed it from this interpreter's own CPython prefix (`--seed-runtime`) and skip
  where that prefix is not a self-contained installation;
- network (stock wheels from PyPI): build + export a layer whose "patched" wheel
  is stock libmlx under a label -> the export check must refuse it;
- integration: a real patched wheel (wheels/ or MLX_FORK_STACK_WHEELS) -> the
  exported layer loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from packaging.tags import sys_tags

from build_tools import stack, tools
from build_tools.errors import MlxForkError
from build_tools.libmlx_probe import parse_probe, probe_command
from build_tools.virtualenvs import create_venv

ROOT = Path(__file__).resolve().parent.parent
LABEL = "fork.2.h0123456789"
VERSION = f"0.31.1+{LABEL}"
HOST_TAG = next(iter(sys_tags())).platform


def _record_line(name: str, data: bytes) -> str:
    import base64

    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(directory: Path, dist: str, version: str, tag: str, files: dict[str, bytes] | None = None,
               requires: list[str] | None = None) -> Path:
    """A small valid wheel (METADATA, WHEEL, RECORD) with `files`."""
    escaped = dist.replace("-", "_")
    dist_info = f"{escaped}-{version}.dist-info"
    members = dict(files or {})
    meta = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires or [])
    members[f"{dist_info}/METADATA"] = meta.encode()
    pure = "true" if tag == "py3-none-any" else "false"
    members[f"{dist_info}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {pure}\nTag: {tag}\n".encode()
    record = [_record_line(n, d) for n, d in members.items()] + [f"{dist_info}/RECORD,,"]
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{escaped}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def provenance(version: str, libmlx_sha256: str) -> bytes:
    public, _, label = version.partition("+")
    data = {"schema": 1, "tool": "mlx-fork", "version": version, "runtime_version": f"{public}.0+{label}", "label": label,
            "inputs_sha256": "0" * 64, "inputs": {}, "outputs": {"libmlx_sha256": libmlx_sha256}, "info": {}}
    return (json.dumps(data, indent=2) + "\n").encode()


# ---------------------------------------------------------------- hermetic

def test_platform_mapping() -> None:
    assert stack.venvstacks_platform("manylinux_2_35_x86_64") == "linux_x86_64"
    assert stack.venvstacks_platform("manylinux_2_35_aarch64") == "linux_aarch64"
    assert stack.venvstacks_platform("macosx_14_0_arm64") == "macosx_arm64"
    with pytest.raises(MlxForkError):
        stack.venvstacks_platform("win_amd64")


def test_choose_patched_backend(tmp_path: Path) -> None:
    make_wheel(tmp_path, "mlx-cpu", "0.31.1", "py3-none-manylinux_2_35_x86_64")  # stock: not ours
    make_wheel(tmp_path, "mlx-cpu", "0.32.1+fork.1.haaaaaaaaaa", "py3-none-manylinux_2_35_x86_64")  # other base
    ours = make_wheel(tmp_path, "mlx-cpu", VERSION, "py3-none-manylinux_2_35_x86_64")
    # Each macOS deployment target is a build of its own, with its own label.
    for i, target in enumerate(("15_0", "14_0", "26_0")):
        make_wheel(tmp_path, "mlx-metal", f"0.31.1+fork.2.h{i}123456789", f"py3-none-macosx_{target}_arm64")
    wheels = stack.patched_wheels(tmp_path, "0.31.1")
    assert {(w.dist, w.platform_tag) for w in wheels} == {
        ("mlx-cpu", "manylinux_2_35_x86_64"),
        ("mlx-metal", "macosx_14_0_arm64"), ("mlx-metal", "macosx_15_0_arm64"), ("mlx-metal", "macosx_26_0_arm64"),
    }
    linux = stack.choose_backend(wheels, "linux_x86_64", None)
    assert linux.path == ours and linux.requirement == f"mlx-cpu=={VERSION}"
    assert linux.sha256 == hashlib.sha256(ours.read_bytes()).hexdigest()
    # The 14.0 build runs on every later macOS.
    mac = stack.choose_backend(wheels, "macosx_arm64", None)
    assert (mac.platform_tag, str(mac.version)) == ("macosx_14_0_arm64", "0.31.1+fork.2.h1123456789")
    with pytest.raises(MlxForkError, match="no patched mlx-cpu/mlx-cuda-12/mlx-cuda-13 wheel for linux_aarch64"):
        stack.choose_backend(wheels, "linux_aarch64", None)
    with pytest.raises(MlxForkError, match="mlx-cuda-12"):
        stack.choose_backend(wheels, "linux_x86_64", "mlx-cuda-12")


def test_frontend_pin_follows_full_build(tmp_path: Path) -> None:
    make_wheel(tmp_path, "mlx-cpu", VERSION, "py3-none-manylinux_2_35_x86_64")
    plan = stack.plan_layer("v0.31.1", tmp_path, target="linux_x86_64", python_implementation="cpython@3.11.13")
    assert plan.requirements == ["mlx==0.31.1", f"mlx-cpu=={VERSION}"]
    assert plan.runtime_name == "cpython-3.11" and plan.framework_env == "framework-mlx"
    make_wheel(tmp_path, "mlx", VERSION, "cp311-cp311-manylinux_2_35_x86_64")
    plan = stack.plan_layer("v0.31.1", tmp_path, target="linux_x86_64", python_implementation="cpython@3.11.13")
    assert plan.requirements == [f"mlx=={VERSION}", f"mlx-cpu=={VERSION}"]


def _plan(wheels: Path, version: str = VERSION, implementation: str | None = "cpython@3.11.13",
          existing: dict | None = None) -> stack.LayerPlan:
    make_wheel(wheels, "mlx-cpu", version, "py3-none-manylinux_2_35_x86_64")
    return stack.plan_layer("v0.31.1", wheels, target="linux_x86_64",
                            python_implementation=implementation, existing=existing)


def test_write_then_update_keeps_other_layers(tmp_path: Path) -> None:
    spec_path = tmp_path / "stack" / "venvstacks.toml"
    wheels = tmp_path / "wheels"
    stack.write_spec(spec_path, _plan(wheels), wheels)
    text = spec_path.read_text(encoding="utf-8")
    assert "venvstacks lock venvstacks.toml --local-wheels ../wheels" in text
    data = tomllib.loads(text)
    assert data["runtimes"] == [{"name": "cpython-3.11", "python_implementation": "cpython@3.11.13",
                                 "requirements": [], "platforms": ["linux_x86_64"]}]
    assert data["frameworks"] == [{"name": "mlx", "runtime": "cpython-3.11", "platforms": ["linux_x86_64"],
                                   "requirements": ["mlx==0.31.1", f"mlx-cpu=={VERSION}"]}]

    # The user adds their own layers; a new build relabels ours.
    spec_path.write_text(text + '\n[[frameworks]]\nname = "web"\nruntime = "cpython-3.11"\nrequirements = ["flask"]\n'
                         '\n[[applications]]\nname = "server"\nlaunch_module = "server.py"\nframeworks = ["mlx", "web"]\n'
                         'requirements = ["mlx", "flask"]\n', encoding="utf-8")
    newer = "0.31.1+fork.3.h9999999999"
    existing = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    (wheels / f"mlx_cpu-{VERSION}-py3-none-manylinux_2_35_x86_64.whl").unlink()
    plan = _plan(wheels, newer, implementation=None, existing=existing)
    assert plan.python_implementation == "cpython@3.11.13"  # kept from the file
    stack.write_spec(spec_path, plan, wheels)
    data = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    assert [fw["name"] for fw in data["frameworks"]] == ["web", "mlx"]
    assert next(fw for fw in data["frameworks"] if fw["name"] == "mlx")["requirements"] == ["mlx==0.31.1", f"mlx-cpu=={newer}"]
    assert data["applications"] == [{"name": "server", "launch_module": "server.py", "frameworks": ["mlx", "web"],
                                     "requirements": ["mlx", "flask"]}]
    assert len(data["runtimes"]) == 1


LOCK = """# This file was autogenerated by uv via the following command:
#    python3 -Im venvstacks lock
mlx==0.31.1 \\
    --hash=sha256:{front}
mlx-cpu=={version} \\
    --hash=sha256:{back}
"""


def test_check_lock_requires_exactly_our_hash(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    plan = _plan(wheels)
    lock = stack.lock_file(tmp_path, plan)
    assert lock.name == "requirements-framework-mlx-linux_x86_64.txt"
    assert stack.check_lock(tmp_path, plan) == [f"{lock} was not written"]
    lock.parent.mkdir(parents=True)
    lock.write_text(LOCK.format(front="a" * 64, version=VERSION, back=plan.backend.sha256), encoding="utf-8")
    assert stack.check_lock(tmp_path, plan) == []
    lock.write_text(LOCK.format(front="a" * 64, version=VERSION, back="b" * 64), encoding="utf-8")
    assert any("lock hashes" in p for p in stack.check_lock(tmp_path, plan))
    lock.write_text(LOCK.format(front="a" * 64, version="0.31.1", back=plan.backend.sha256), encoding="utf-8")
    assert any("locked 0.31.1" in p for p in stack.check_lock(tmp_path, plan))


def test_diagnose_runtime_download_failure() -> None:
    log = ("pbs_installer/_install.py:116 in download\nConnectError: [Errno -2] Name or service not known\n"
           "https://github.com/astral-sh/python-build-standalone/releases/download/20251007/"
           "cpython-3.11.13%2B20251007-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz")
    hint = stack.diagnose_venvstacks(log, Path("venvstacks.log"))
    assert "python-build-standalone" in hint and "--seed-runtime" in hint and "install_only_stripped.tar.gz" in hint
    assert "pdm[locked]" in stack.diagnose_venvstacks("AttributeError: ... SyncSqliteStorage", Path("x"))


def test_cli_registers_stack() -> None:
    from build_tools.cli import make_parser

    args = make_parser().parse_args(["stack", "--base", "v0.31.1", "--lock", "--seed-runtime", "/opt/python"])
    assert args.func is stack._cmd_stack and args.lock and args.seed_runtime == Path("/opt/python")


# ---------------------------------------------------------------- with venvstacks

def _tools_dir() -> Path:
    env = os.environ.get("MLX_FORK_WORK")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlx-fork"
    return base / "tools"


@pytest.fixture(scope="session")
def venvstacks_exe() -> Path:
    """venvstacks in an environment of its own (installed from PyPI into the work dir once)."""
    found = os.environ.get("MLX_FORK_VENVSTACKS")
    if found:
        return Path(found)
    installed = tools.find_env_tool("venvstacks")
    if installed is not None and len(installed) == 1:  # a script this fixture can point MLX_FORK_VENVSTACKS at
        return Path(installed[0])
    env = _tools_dir() / "venvstacks-venv"
    exe = env / "bin" / "venvstacks"
    if not exe.exists():
        shutil.rmtree(env, ignore_errors=True)
        python = create_venv(env, with_pip=True)
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", "venvstacks", "pdm[locked]"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not exe.exists():
            shutil.rmtree(env, ignore_errors=True)
            pytest.skip("venvstacks could not be installed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return exe


@pytest.fixture()
def use_venvstacks(venvstacks_exe: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLX_FORK_VENVSTACKS", str(venvstacks_exe))
    return venvstacks_exe


def _seedable_prefix() -> Path:
    prefix = Path(sys.base_prefix)
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if prefix == Path("/usr") or not (prefix / "bin" / "python3").exists() or not (prefix / "lib" / f"python{minor}").is_dir():
        pytest.skip(f"{prefix} is not a self-contained CPython prefix to stand in for the python-build-standalone "
                    "runtime (which venvstacks downloads from GitHub)")
    return prefix


def _this_runtime() -> str:
    return "cpython@{}.{}.{}".format(*sys.version_info[:3])


def test_venvstacks_accepts_the_spec(tmp_path: Path, venvstacks_exe: Path) -> None:
    wheels = tmp_path / "wheels"
    spec_path = tmp_path / "stack" / "venvstacks.toml"
    stack.write_spec(spec_path, _plan(wheels), wheels)
    proc = subprocess.run([str(venvstacks_exe), "lock", "--show-only", "--json", str(spec_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "framework-mlx" in proc.stdout and "cpython-3.11" in proc.stdout


def test_lock_records_the_patched_wheel_hash_offline(tmp_path: Path, use_venvstacks: Path) -> None:
    """`mlx-fork stack --lock --no-index`: venvstacks' lock pins our wheel by its sha256, from wheels/ alone."""
    prefix = _seedable_prefix()
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "mlx", "0.31.1", "py3-none-any", {"mlx/__init__.py": b""})
    ours = make_wheel(wheels, "mlx-cpu", VERSION, f"py3-none-{HOST_TAG}",
                      {"mlx/lib/mlx-fork.json": provenance(VERSION, "c" * 64)})
    from build_tools.cli import main, make_parser

    rc = main(["stack", "--dir", str(tmp_path / "stack"), "--wheels", str(wheels), "--python", _this_runtime(),
               "--lock", "--no-index", "--seed-runtime", str(prefix)])
    assert rc == 0
    target = stack.venvstacks_platform(HOST_TAG)
    lock = tmp_path / "stack" / "requirements" / "framework-mlx" / f"requirements-framework-mlx-{target}.txt"
    locked = stack.locked_hashes(lock.read_text(encoding="utf-8"))
    assert locked["mlx-cpu"] == (VERSION, {hashlib.sha256(ours.read_bytes()).hexdigest()})
    # venvstacks' layer metadata for the lock exists too (it decides when the layer needs relocking).
    assert lock.with_name(lock.name + ".json").is_file()
    # The stand-in runtime is never reused silently.
    with pytest.raises(MlxForkError, match="is a stand-in seeded from"):
        stack._cmd_stack(make_parser().parse_args([
            "stack", "--dir", str(tmp_path / "stack"), "--wheels", str(wheels), "--lock", "--no-index"]))


STOCK_CACHE = "stock-wheels"


def _stock_wheels(dest: Path) -> tuple[Path, Path]:
    """Stock mlx (this Python) + mlx-cpu 0.31.1 from PyPI, cached under the work dir."""
    dest.mkdir(parents=True, exist_ok=True)
    for requirement in ("mlx==0.31.1", "mlx-cpu==0.31.1"):
        if not list(dest.glob(requirement.split("==")[0].replace("-", "_") + "-0.31.1-*.whl")):
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                   "--only-binary", ":all:", "-d", str(dest), requirement],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                pytest.skip(f"cannot download {requirement} from PyPI: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return next(dest.glob("mlx-0.31.1-*.whl")), next(dest.glob("mlx_cpu-0.31.1-*.whl"))


@pytest.mark.network
def test_export_refuses_stock_libmlx_under_a_label(tmp_path: Path, use_venvstacks: Path) -> None:
    """A wheel that claims a label but carries stock libmlx: the exported layer's check must fail."""
    if not (sys.platform.startswith("linux") and HOST_TAG.endswith("x86_64")):
        pytest.skip("uses the stock manylinux x86_64 mlx-cpu wheel")
    prefix = _seedable_prefix()
    from build_tools.wheelfile import rewrite_wheel

    _, stock_cpu = _stock_wheels(_tools_dir().parent / STOCK_CACHE)
    wheels = tmp_path / "wheels"
    libmlx = zipfile.ZipFile(stock_cpu).read("mlx/lib/libmlx.so")
    fake = rewrite_wheel(stock_cpu, wheels, version=VERSION,
                         add={"mlx/lib/mlx-fork.json": provenance(VERSION, hashlib.sha256(libmlx).hexdigest())})
    from build_tools.cli import make_parser

    with pytest.raises(MlxForkError) as excinfo:
        stack._cmd_stack(make_parser().parse_args([
            "stack", "--dir", str(tmp_path / "stack"), "--wheels", str(wheels), "--python", _this_runtime(),
            "--export", str(tmp_path / "export"), "--seed-runtime", str(prefix)]))
    message = str(excinfo.value)
    assert "mx.__version__ is '0.31.1'" in message and "not the patched one" in message
    # Everything before the check worked: the layer was exported and its libmlx is the wheel's.
    probe = subprocess.run(probe_command(tmp_path / "export" / "framework-mlx" / "bin" / "python", isolated=False),
                           capture_output=True, text=True, check=True)
    found = parse_probe(probe.stdout)
    assert found["loaded"].startswith(str((tmp_path / "export" / "framework-mlx").resolve()))
    assert found["loaded_sha256"] == hashlib.sha256(libmlx).hexdigest()
    assert fake.name in {p.name for p in wheels.iterdir()}


@pytest.mark.integration
def test_export_loads_the_patched_libmlx(tmp_path: Path, use_venvstacks: Path) -> None:
    """The real thing: a patched wheel from `mlx-fork build` goes through lock, build and export."""
    wheels = Path(os.environ.get("MLX_FORK_STACK_WHEELS") or ROOT / "wheels")
    try:
        plan = stack.plan_layer("v0.31.1", wheels, python_implementation=_this_runtime())
    except MlxForkError as exc:
        pytest.skip(f"no patched wheel to stack (set MLX_FORK_STACK_WHEELS or run mlx-fork build): {exc.message}")
    prefix = _seedable_prefix()
    from build_tools.cli import main

    rc = main(["stack", "--dir", str(tmp_path / "stack"), "--wheels", str(wheels), "--python", _this_runtime(),
               "--export", str(tmp_path / "export"), "--seed-runtime", str(prefix)])
    assert rc == 0
    check = stack.check_exported_layer(tmp_path / "export", plan)
    assert check.ok, check.problems
    assert Version(check.probe["version"]) == plan.backend.version
    assert check.probe["version"].endswith(".0+" + plan.backend.version.local)
