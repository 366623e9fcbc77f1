"""wheels/ as a PEP 503 index: pages, sha256 fragments, and pip resolving a local version from it."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_package import make_wheel

from build_tools.cli import main
from build_tools.index import write_index


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    d = tmp_path / "wheels"
    make_wheel(d, "mlx_cpu", "0.31.1+fork.0.h0123456789", tag="py3-none-any")
    make_wheel(d, "mlx_cpu", "0.31.1+fork.2.habcdefabcd", tag="py3-none-any")
    make_wheel(d, "mlx", "0.31.1", tag="py3-none-any")
    return d


def test_pages_list_every_wheel_with_its_sha256(wheels: Path) -> None:
    entries = write_index(wheels)
    assert {e.project for e in entries} == {"mlx", "mlx-cpu"}
    root = (wheels / "simple" / "index.html").read_text()
    assert 'href="mlx/"' in root and 'href="mlx-cpu/"' in root
    page = (wheels / "simple" / "mlx-cpu" / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', page)
    assert len(links) == 2
    for link in links:
        rel, _, fragment = link.partition("#sha256=")
        assert rel.startswith("../../")
        wheel = (wheels / "simple" / "mlx-cpu" / rel).resolve()
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == fragment
    assert not list(wheels.rglob(".index-*"))  # no temporary files left behind


def test_stale_projects_are_removed(wheels: Path) -> None:
    write_index(wheels)
    for w in wheels.glob("mlx-*.whl"):
        w.unlink()
    write_index(wheels)
    assert not (wheels / "simple" / "mlx").exists()
    assert (wheels / "simple" / "mlx-cpu" / "index.html").is_file()


def test_index_command(wheels: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "--dir", str(wheels)]) == 0
    out = capsys.readouterr()
    assert "mlx_cpu-0.31.1+fork.2.habcdefabcd-py3-none-any.whl" in out.out
    assert "file://" in out.err


def test_missing_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "--dir", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("route", ["index-url", "find-links"])
def test_pip_resolves_the_local_version_from_wheels(wheels: Path, tmp_path: Path, route: str) -> None:
    """`mlx-cpu==0.31.1` (what stock mlx requires) is satisfied by the local build; the exact pin works too."""
    write_index(wheels)
    where = (["--index-url", (wheels / "simple").resolve().as_uri()] if route == "index-url"
             else ["--no-index", "--find-links", str(wheels)])
    for requirement, expected in (("mlx-cpu==0.31.1+fork.0.h0123456789", "fork.0.h0123456789"),
                                  ("mlx-cpu==0.31.1", None)):
        out = tmp_path / f"dl-{route}-{expected}"
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(out), *where,
                               requirement], capture_output=True, text=True, env=_pip_env())
        assert proc.returncode == 0, proc.stderr
        (got,) = out.glob("*.whl")
        if expected:
            assert expected in got.name
        else:
            assert "+fork." in got.name  # a local build satisfies ==0.31.1


def test_a_corrupted_wheel_is_rejected_through_the_index(wheels: Path, tmp_path: Path) -> None:
    write_index(wheels)
    target = wheels / "mlx-0.31.1-py3-none-any.whl"
    target.write_bytes(target.read_bytes() + b"\0")  # changed after indexing
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp_path / "dl"),
                           "--index-url", (wheels / "simple").resolve().as_uri(), "mlx==0.31.1"],
                          capture_output=True, text=True, env=_pip_env())
    assert proc.returncode != 0
    assert "HASHES" in proc.stderr.upper() or "hash" in proc.stderr.lower()
