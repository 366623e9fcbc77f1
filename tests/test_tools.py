"""Tools mlx-fork pip-installs (auditwheel, delocate, ...) are found in its environment, not on PATH.

`.venv/bin/mlx-fork build` and `.venv/bin/python -m pytest` run without .venv/bin
on PATH; these tests run the lookups with PATH holding system directories only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from build_tools import deps, package, tools
from build_tools.bases import load_base
from build_tools.errors import MlxForkError
from build_tools.profiles import get_profile
from build_tools.wheelfile import record_digest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/bin:/bin"


def _executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_a_script_beside_the_interpreter_is_found_and_one_on_path_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A venv's python is a symlink to the base interpreter: its own directory is where pip puts scripts.
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(Path(sys.executable).resolve())
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    on_path = tmp_path / "elsewhere"
    _executable(on_path / "delocate-wheel")
    monkeypatch.setenv("PATH", f"{on_path}{os.pathsep}{SYSTEM_PATH}")
    assert tools.find_env_tool("delocate-wheel") is None
    with pytest.raises(MlxForkError, match="delocate-wheel is not installed") as err:
        tools.env_tool("delocate-wheel")
    assert err.value.hint == f"{venv_bin / 'python'} -m pip install 'delocate>=0.12'"
    script = _executable(venv_bin / "delocate-wheel")
    assert tools.env_tool("delocate-wheel") == [str(script)]


def test_tools_with_a_main_module_run_in_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    assert tools.env_tool("pip") == [sys.executable, "-m", "pip"]
    if sys.platform.startswith("linux"):  # auditwheel is a Linux-only dependency of mlx-fork
        assert tools.env_tool("auditwheel") == [sys.executable, "-m", "auditwheel"]


def _elf_wheel(tmp_path: Path) -> Path:
    """A platform wheel holding one small shared library (needs only libc)."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (scripts/setup installs it)")
    lib = tmp_path / "libdemo.so"
    src = tmp_path / "demo.c"
    src.write_text("int demo(int x) { return x + 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    machine = os.uname().machine
    dist_info = "demo-1.0.dist-info"
    files = {
        "demo/libdemo.so": lib.read_bytes(),
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                              f"Tag: py3-none-linux_{machine}\n".encode(),
    }
    record = "".join(f"{n},{record_digest(d)},{len(d)}\n" for n, d in files.items()) + f"{dist_info}/RECORD,,\n"
    wheel = tmp_path / f"demo-1.0-py3-none-linux_{machine}.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist_info}/RECORD", record)
    return wheel


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel checks Linux overlay wheels")
def test_overlay_check_finds_auditwheel_with_a_system_only_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported failure: `auditwheel is not installed` although it is, in the environment."""
    wheel = _elf_wheel(tmp_path)
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    found = package.auditwheel_check(wheel, get_profile("linux-cpu"), tmp_path / "package.log")
    assert found.startswith("manylinux")
    assert f'platform tag: "{found}"' in (tmp_path / "package.log").read_text()  # what auditwheel said


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel checks Linux overlay wheels")
def test_doctor_and_the_overlay_check_look_auditwheel_up_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    base, profile = load_base("v0.31.1", ROOT / "patches"), get_profile("linux-cpu")

    def doctor_auditwheel() -> deps.Check:
        return next(c for c in deps.doctor_checks(base, profile, tmp_path) if c.name == "python: auditwheel")

    ran: list[list[str]] = []

    def fake_run(cmd: list, **kwargs: object) -> subprocess.CompletedProcess[str]:
        ran.append([str(c) for c in cmd])
        return subprocess.CompletedProcess(cmd, 0, 'consistent with the following platform tag: "manylinux_2_17_x86_64"', "")

    monkeypatch.setattr(package, "run", fake_run)
    prefix = tools.env_tool("auditwheel")
    package.auditwheel_check(tmp_path / "x.whl", profile)
    assert ran[0][:len(prefix)] == prefix and ran[0][len(prefix)] == "show"
    check = doctor_auditwheel()
    assert check.ok and " ".join(prefix) in check.detail

    # Missing for one is missing for the other, with the same install command.
    monkeypatch.setitem(tools.ENV_TOOLS, "auditwheel", tools.EnvTool("no-such-auditwheel", None, "auditwheel"))
    check = doctor_auditwheel()
    assert not check.ok and check.required
    with pytest.raises(MlxForkError, match="auditwheel is not installed") as err:
        package.auditwheel_check(tmp_path / "x.whl", profile)
    assert err.value.hint == check.fix == tools.install_command("auditwheel")


def test_venvstacks_comes_from_mlx_fork_venvstacks_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from build_tools import stack

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setitem(tools.ENV_TOOLS, "venvstacks", tools.EnvTool("venvstacks", None, "venvstacks"))
    _executable(tmp_path / "elsewhere" / "venvstacks")
    monkeypatch.setenv("PATH", f"{tmp_path / 'elsewhere'}{os.pathsep}{SYSTEM_PATH}")
    monkeypatch.delenv("MLX_FORK_VENVSTACKS", raising=False)
    with pytest.raises(MlxForkError, match=r"venvstacks is not installed .* MLX_FORK_VENVSTACKS is not set"):
        stack.venvstacks_command()
    script = _executable(venv_bin / "venvstacks")
    assert stack.venvstacks_command() == [str(script)]
    monkeypatch.setenv("MLX_FORK_VENVSTACKS", "/opt/venvstacks/bin/venvstacks")
    assert stack.venvstacks_command() == ["/opt/venvstacks/bin/venvstacks"]
