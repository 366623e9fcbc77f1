"""`mlx-fork base add vX.Y.Z --source PATH`: write patches/vX.Y.Z/base.toml from MLX source and PyPI.

Nothing in a pin is written by hand. From the MLX git repository at the tag:
the commit, its tree id, the version (checked against mlx/version.h), how
setup.py selects the wheel stages, and every FetchContent_Declare with the
platforms whose build reaches it (read from the CMake files: the enclosing
if() conditions and the backend directory). From the dependencies' own git
repositories (`--from NAME=PATH`, else a shallow clone of upstream): the
commit of each git-export pin and the tree id of each exported subtree. From
PyPI: every stock backend wheel of that version with its sha256, and for the
linux-cuda build the nvidia-* wheels that the stock mlx-cuda-13 wheel requires.

What cannot be read from either is stated once, as rules (DEPENDENCY_RULES,
LIBRARY_RULES, the comments below): how mlx-fork provides each dependency
offline, what is lost without it, which subtrees a git-export takes. A
dependency no rule knows is pinned `online-only` and the command says so; a
platform with no stock wheel is named in the file and on the terminal.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import MlxForkError
from .git import git
from .paths import patches_dir
from .proc import run, say
from .profiles import MACOS_TARGETS, PLATFORMS
from .pypi import DEFAULT_PYPI, DistFile, PackageIndex, PyPI, RecordingIndex, requires_dist
from .stockwheels import FRONTEND_PYTHONS

TAG = re.compile(r"^v(\d+\.\d+\.\d+)$")
ALL_PLATFORMS: tuple[str, ...] = tuple(sorted(PLATFORMS))  # a declaration no condition limits
LINUX_ARCHES: tuple[str, ...] = ("x86_64", "aarch64")


# ---------------------------------------------------------------- rules (what the source cannot say)


@dataclass(frozen=True)
class DependencyRule:
    """How mlx-fork provides one FetchContent dependency (by its FetchContent name) offline."""

    name: str
    offline: str  # a strategy of deps.py
    consequence: str = ""
    # The rule covers only these of the platforms that fetch the dependency (empty: all of them).
    platforms: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # ... or all of them but these
    # git-export: (path in the repository, where it goes in the exported copy).
    exports: tuple[tuple[str, str], ...] = ()
    upstream: str = ""  # replaces the fetched URL where upstream computes it per platform
    comment: str = ""  # written above the entry
    section: str = ""  # entries of a section follow its SECTION_COMMENTS line


SECTION_COMMENTS: dict[str, str] = {
    "cuda": "CUDA: every FetchContent pin from a local copy (`mlx-fork deps fetch`), verified by git tree ids.",
}

WINDOWS = "Windows is not a target of mlx-fork"

# The order of this table is the order of [[dependencies]] in base.toml.
DEPENDENCY_RULES: tuple[DependencyRule, ...] = (
    DependencyRule("json", "debian-json"),
    DependencyRule("fmt", "system-fmt", exclude=("linux-cuda",)),
    DependencyRule("fmt", "git-export", platforms=("linux-cuda",), exports=((".", "."),),
                   comment="nvcc cannot compile older fmt (Debian's 9.1: consteval format strings), "
                   "so CUDA builds take the pin."),
    DependencyRule("nanobind", "pypi-sdist", consequence="needed only for the Python bindings (full packaging)"),
    DependencyRule("doctest", "debian-doctest", consequence="needed only for the C++ test suite (MLX_BUILD_TESTS)"),
    DependencyRule("gguflib", "user-dir",
                   consequence="without a gguf-tools checkout MLX is built with MLX_BUILD_GGUF=OFF: "
                   "mx.load/mx.save_gguf raise, and 3 gguf tests in test_load.py fail on both sides of a comparison"),
    DependencyRule("metal_cpp", "stock-wheel-metal-cpp",
                   consequence="taken from mlx/include/metal_cpp of the stock mlx-metal wheel of the same version"),
    DependencyRule("openblas", "unsupported-platform", consequence=WINDOWS,
                   upstream="https://github.com/OpenMathLib/OpenBLAS/releases (prebuilt Windows binaries)"),
    DependencyRule("dlfcn-win32", "unsupported-platform", consequence=WINDOWS),
    DependencyRule("cccl", "git-export", section="cuda",
                   consequence="the release archive's include/ is these four repository directories",
                   exports=(("libcudacxx/include/cuda", "include/cuda"), ("libcudacxx/include/nv", "include/nv"),
                            ("cub/cub", "include/cub"), ("thrust/thrust", "include/thrust"))),
    DependencyRule("nvtx3", "cuda-toolkit", section="cuda",
                   consequence="NVTX3 is header-only and the toolkit ships the same C++ API (nvtx3.hpp 1.0); "
                   "only profiler annotations use it"),
    DependencyRule("cudnn", "git-export", section="cuda", exports=((".", "."),)),
    DependencyRule("cutlass", "git-export", section="cuda", consequence="header-only: MLX uses only include/",
                   exports=(("include", "include"),)),
)


@dataclass(frozen=True)
class LibraryRule:
    """Where a pinned nvidia-* wheel keeps what a linux-cuda build links against (wheel layout, CUDA 13)."""

    name: str
    headers: tuple[str, ...]
    shared: tuple[str, ...]


LIBRARY_RULES: dict[str, LibraryRule] = {
    "nvidia-cublas": LibraryRule("cublas", ("nvidia/cu13/include/cublas*.h",),
                                 ("nvidia/cu13/lib/libcublas.so.13", "nvidia/cu13/lib/libcublasLt.so.13")),
    "nvidia-cuda-nvrtc": LibraryRule("nvrtc", ("nvidia/cu13/include/nvrtc.h",), ("nvidia/cu13/lib/libnvrtc.so.13",)),
    "nvidia-cudnn-cu13": LibraryRule("cudnn_libs", ("nvidia/cudnn/include/*.h",), ("nvidia/cudnn/lib/libcudnn*.so.9",)),
    "nvidia-nccl-cu13": LibraryRule("nccl", ("nvidia/nccl/include/**/*.h",), ("nvidia/nccl/lib/libnccl.so.2",)),
    # cufftXt.h includes cudalibxt.h, which the cufft* pattern does not match.
    "nvidia-cufft": LibraryRule("cufft", ("nvidia/cu13/include/cufft*.h", "nvidia/cu13/include/cudalibxt.h"),
                                ("nvidia/cu13/lib/libcufft.so.12",)),
}
# Requirements of the stock wheel that a build does not link from a wheel: what it uses instead.
LIBRARIES_NOT_PINNED: dict[str, str] = {
    "nvidia-cuda-runtime": "the CUDA runtime (cudart) comes from the toolkit the build compiles with",
}
# The stock wheel whose Requires-Dist names the libraries: linux-cuda builds overlay
# mlx-cuda-13 (profiles.default_cuda_toolkit) on x86_64.
LIBRARIES_FROM = ("mlx-cuda-13", "x86_64")
# Where the chosen library wheels must install: what pip would pick on a linux-cuda build host.
LIBRARY_ENVIRONMENT = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                       "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}

# Stock backend wheels: distribution -> the platform it serves.
BACKEND_DISTS: tuple[tuple[str, str], ...] = (
    ("mlx-cpu", "linux-cpu"),
    ("mlx-metal", "macos-metal"),
    ("mlx-cuda-12", "linux-cuda"),
    ("mlx-cuda-13", "linux-cuda"),
)


# ---------------------------------------------------------------- the MLX source


@dataclass(frozen=True)
class MlxTag:
    version: str
    tag: str
    commit: str
    tree: str
    files: dict[str, str]  # CMake files and setup.py: path -> text


def _git(git_dir: Path, *args: str, what: str, hint: str = "") -> str:
    proc = git(git_dir, *args, check=False)
    if proc.returncode != 0:
        raise MlxForkError(f"{what}: {proc.stderr.strip() or 'git failed'}", hint=hint or None)
    return proc.stdout


def read_mlx_tag(source: Path, tag: str) -> MlxTag:
    """The tag's commit, tree and the files `base add` reads, straight from the git repository."""
    match = TAG.match(tag)
    if not match:
        raise MlxForkError(f"{tag!r} is not an upstream release tag", hint="give a tag like v0.32.1")
    source = source.expanduser()
    if not source.is_dir():
        raise MlxForkError(f"--source {source} does not exist")
    probe = git(source, "rev-parse", "--git-dir", check=False)
    if probe.returncode != 0:
        raise MlxForkError(f"--source {source} is not a git repository",
                           hint="base add reads the tag's commit: give a clone or mirror of "
                           "https://github.com/ml-explore/mlx (a plain directory has no commit)")
    commit = _git(source, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}",
                  what=f"--source {source} has no tag {tag}", hint=f"git -C {source} fetch --tags").strip()
    tree = _git(source, "rev-parse", f"{commit}^{{tree}}", what=f"tree of {commit}").strip()
    names = _git(source, "ls-tree", "-r", "--name-only", commit, what=f"files of {tag}").splitlines()
    wanted = [n for n in names if n.endswith(("CMakeLists.txt", ".cmake")) or n in ("setup.py", "mlx/version.h")]
    files = {n: _git(source, "show", f"{commit}:{n}", what=f"{tag}:{n}") for n in wanted}
    attributes = [n for n in names if n.rsplit("/", 1)[-1] == ".gitattributes"]
    for name in attributes:
        if re.search(r"\bexport-(ignore|subst)\b", _git(source, "show", f"{commit}:{name}", what=name)):
            raise MlxForkError(f"{tag}:{name} has export rules: the tag archive's files differ from the commit's "
                               "tree, so the archive fallback cannot be verified by the tree id")
    version = match.group(1)
    header = files.get("mlx/version.h", "")
    parts = [re.search(rf"#define MLX_VERSION_{p} (\d+)", header) for p in ("MAJOR", "MINOR", "PATCH")]
    if all(parts) and ".".join(p.group(1) for p in parts if p) != version:
        found = ".".join(p.group(1) for p in parts if p)
        raise MlxForkError(f"{tag}: mlx/version.h says {found}, not {version}")
    return MlxTag(version, tag, commit, tree, files)


def build_stage_env(setup_py: str) -> str:
    """How upstream setup.py selects the frontend/backend wheel: MLX_BUILD_*_PACKAGE or MLX_BUILD_STAGE."""
    if "MLX_BUILD_FRONTEND_PACKAGE" in setup_py:
        return "package"
    if "MLX_BUILD_STAGE" in setup_py:
        return "stage"
    raise MlxForkError("setup.py reads neither MLX_BUILD_FRONTEND_PACKAGE nor MLX_BUILD_STAGE: "
                       "a new way of selecting wheel stages; teach bases.py and package.py about it")


# ---------------------------------------------------------------- CMake: FetchContent declarations


@dataclass(frozen=True)
class Command:
    name: str  # lower case
    args: tuple[str, ...]
    line: int


def cmake_commands(text: str) -> list[Command]:
    """The command invocations of a CMake file, comments dropped, quoted arguments unquoted."""
    commands: list[Command] = []
    i, n, line = 0, len(text), 1
    ident = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            i = _skip_comment(text, i)
        else:
            m = ident.match(text, i)
            if not m:
                i += 1
                continue
            j = m.end()
            while j < n and text[j] in " \t":
                j += 1
            if j >= n or text[j] != "(":
                i = m.end()
                continue
            start_line = line
            args, i = _arguments(text, j + 1)
            line += text.count("\n", m.start(), i)
            commands.append(Command(m.group(0).lower(), tuple(args), start_line))
    return commands


def _skip_comment(text: str, i: int) -> int:
    bracket = re.match(r"#\[(=*)\[", text[i:])
    if bracket:
        end = text.find("]" + bracket.group(1) + "]", i)
        return len(text) if end < 0 else end + len(bracket.group(1)) + 2
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _arguments(text: str, i: int) -> tuple[list[str], int]:
    args: list[str] = []
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            i = _skip_comment(text, i)
        elif c == "(":
            depth += 1
            args.append("(")
            i += 1
        elif c == ")":
            if depth == 0:
                return args, i + 1
            depth -= 1
            args.append(")")
            i += 1
        elif c == '"':
            j, value = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    value.append(text[j + 1])
                    j += 2
                else:
                    value.append(text[j])
                    j += 1
            args.append("".join(value))
            i = j + 1
        else:
            m = re.compile(r'[^\s()#"]+').match(text, i)
            assert m is not None
            args.append(m.group(0))
            i = m.end()
    return args, i


# A branch condition naming one of these limits a declaration to the platforms given.
CONDITION_PLATFORMS: dict[str, frozenset[str]] = {
    "MLX_BUILD_METAL": frozenset({"macos-metal"}),
    "APPLE": frozenset({"macos-metal"}),
    "MLX_BUILD_CUDA": frozenset({"linux-cuda"}),
    "WIN32": frozenset({"windows-cpu"}),
}
# ... and so does the backend directory a CMake file lives in.
DIRECTORY_PLATFORMS: dict[str, frozenset[str]] = {
    "mlx/backend/cuda/": frozenset({"linux-cuda"}),
    "mlx/backend/metal/": frozenset({"macos-metal"}),
}


def _condition_platforms(args: tuple[str, ...] | None) -> frozenset[str] | None:
    """Platforms a branch condition limits to; None when it says nothing we can read."""
    if not args or "NOT" in args:
        return None
    words = [a for a in args if a not in ("(", ")", "OR")]
    if "AND" in args:
        found = [CONDITION_PLATFORMS[w] for w in words if w in CONDITION_PLATFORMS]
        return frozenset.intersection(*found) if found else None
    if words and all(w in CONDITION_PLATFORMS for w in words):
        return frozenset().union(*(CONDITION_PLATFORMS[w] for w in words))
    return None


@dataclass(frozen=True)
class Declared:
    """One FetchContent_Declare of the tree."""

    name: str
    url: str  # URL download, else ""
    git_repository: str
    git_tag: str
    platforms: tuple[str, ...]
    where: str  # path:line

    @property
    def upstream(self) -> str:
        if self.url:
            return self.url
        return f"{self.git_repository.rstrip('/')}@{self.git_tag}"

    @property
    def version(self) -> str:
        if self.git_tag:
            return re.sub(r"^v(?=\d)", "", self.git_tag)
        path = urllib_path(self.url)
        m = re.search(r"(?:^|[/_-])v?(\d+(?:\.\d+)*)(?=[/._-]|$)", path)
        if not m:
            raise MlxForkError(f"{self.where}: cannot read a version from the URL {self.url}")
        return m.group(1)

    @property
    def repository(self) -> str:
        """The git repository of the pin: GIT_REPOSITORY, or the GitHub project of a release download."""
        if self.git_repository:
            return re.sub(r"\.git$", "", self.git_repository.rstrip("/"))
        m = re.match(r"^(https://github\.com/[^/]+/[^/]+)/releases/download/", self.url)
        return m.group(1) if m else ""

    @property
    def tag(self) -> str:
        if self.git_tag:
            return self.git_tag
        m = re.match(r"^https://github\.com/[^/]+/[^/]+/releases/download/([^/]+)/", self.url)
        return m.group(1) if m else ""


def urllib_path(url: str) -> str:
    return re.sub(r"^[a-z]+://[^/]+", "", url)


def fetchcontent_declarations(files: dict[str, str]) -> list[Declared]:
    """Every FetchContent_Declare that downloads something (files by path, then line), duplicates merged."""
    found: list[Declared] = []
    for path in sorted(p for p in files if p.endswith(("CMakeLists.txt", ".cmake"))):
        variables: dict[str, set[str]] = {}
        stack: list[tuple[str, ...] | None] = []
        for cmd in cmake_commands(files[path]):
            if cmd.name == "set" and cmd.args:
                variables.setdefault(cmd.args[0], set()).add(" ".join(cmd.args[1:]))
            elif cmd.name == "if":
                stack.append(cmd.args)
            elif cmd.name == "elseif" and stack:
                stack[-1] = cmd.args
            elif cmd.name == "else" and stack:
                stack[-1] = None
            elif cmd.name == "endif" and stack:
                stack.pop()
            elif cmd.name == "fetchcontent_declare" and cmd.args:
                declared = _declared(path, cmd, stack, variables)
                if declared is not None:
                    found.append(declared)
    merged: dict[str, Declared] = {}
    for d in found:
        first = merged.get(d.name)
        if first is None:
            merged[d.name] = d
        elif first.upstream == d.upstream:
            merged[d.name] = replace(first, platforms=tuple(sorted(set(first.platforms) | set(d.platforms))))
        else:
            # CMake uses the first declaration of a name; a later one is ignored.
            say(f"note: {d.where} declares {d.name} again ({d.upstream}); CMake uses {first.where} ({first.upstream})")
    return list(merged.values())


def _declared(path: str, cmd: Command, stack: list[tuple[str, ...] | None],
              variables: dict[str, set[str]]) -> Declared | None:
    keys = ("URL", "GIT_REPOSITORY", "GIT_TAG", "SOURCE_DIR", "URL_HASH", "GIT_SHALLOW", "SOURCE_SUBDIR",
            "EXCLUDE_FROM_ALL", "OVERRIDE_FIND_PACKAGE", "FIND_PACKAGE_ARGS", "URL_MD5", "DOWNLOAD_EXTRACT_TIMESTAMP")
    options: dict[str, str] = {}
    current = ""
    for arg in cmd.args[1:]:
        if arg in keys:
            current = arg
            options.setdefault(arg, "")
        elif current and not options[current]:
            options[current] = _expand(arg, variables)
    if "SOURCE_DIR" in options and "URL" not in options and "GIT_REPOSITORY" not in options:
        return None  # a directory of the tree itself: nothing is downloaded
    limits = [limited for prefix, limited in DIRECTORY_PLATFORMS.items() if path.startswith(prefix)]
    limits += [limited for condition in stack if (limited := _condition_platforms(condition)) is not None]
    # Nothing limits it: every platform mlx-fork builds (upstream's Windows is not one of them).
    chosen = tuple(sorted(frozenset.intersection(*limits))) if limits else ALL_PLATFORMS
    return Declared(name=cmd.args[0], url=options.get("URL", ""), git_repository=options.get("GIT_REPOSITORY", ""),
                    git_tag=options.get("GIT_TAG", ""), platforms=chosen, where=f"{path}:{cmd.line}")


def _expand(value: str, variables: dict[str, set[str]]) -> str:
    """${VAR} from set(VAR value) earlier in the file; left as is when unset or set to different values."""
    def one(m: re.Match[str]) -> str:
        values = variables.get(m.group(1), set())
        return next(iter(values)) if len(values) == 1 else m.group(0)

    return re.sub(r"\$\{([A-Za-z0-9_]+)\}", one, value)


# ---------------------------------------------------------------- git-export pins


@dataclass(frozen=True)
class Export:
    path: str
    to: str
    tree: str


class Pinner(Protocol):
    def resolve(self, name: str, repository: str, tag: str, paths: list[str]) -> tuple[str, list[str]]:
        """(commit of `tag`, git tree id of each of `paths` at that commit; "." is the root)."""
        ...


@dataclass
class GitPinner:
    """Resolves a tag of a dependency's repository to its commit and the tree ids of subtrees.

    `sources` maps a dependency name to a local clone or mirror (`--from NAME=PATH`);
    others are cloned shallowly from their upstream repository into `scratch`.
    """

    sources: dict[str, str] = field(default_factory=dict)
    scratch: Path | None = None

    def resolve(self, name: str, repository: str, tag: str, paths: list[str]) -> tuple[str, list[str]]:
        where = self.sources.get(name, repository)
        with tempfile.TemporaryDirectory(prefix=f"base-add-{name}-", dir=self.scratch) as tmp:
            git_dir = Path(where).expanduser()
            if not git_dir.exists():
                if "://" not in where:
                    raise MlxForkError(f"--from {name}={where}: no such directory")
                say(f"cloning {where} at {tag} for {name} (pass --from {name}=PATH to use a local clone)")
                git_dir = Path(tmp) / "clone.git"
                run(["git", "clone", "--quiet", "--bare", "--depth", "1", "--branch", tag, where, git_dir],
                    step=f"git clone {name}")
            hint = f"pass --from {name}=PATH, a clone of {repository} that has tag {tag}"
            commit = _git(git_dir, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}",
                          what=f"{name}: {where} has no tag {tag}", hint=hint).strip()
            trees = [_git(git_dir, "rev-parse", f"{commit}^{{tree}}" if p == "." else f"{commit}:{p}",
                          what=f"{name}: {p} at {tag}", hint=hint).strip() for p in paths]
        return commit, trees


# ---------------------------------------------------------------- the pin, as data


@dataclass(frozen=True)
class DependencyPin:
    name: str
    version: str
    upstream: str
    platforms: tuple[str, ...]
    offline: str
    consequence: str = ""
    repository: str = ""
    tag: str = ""
    commit: str = ""
    exports: tuple[Export, ...] = ()
    comment: str = ""
    section: str = ""


@dataclass(frozen=True)
class LibraryPin:
    name: str
    package: str
    version: str
    wheel: str
    sha256: str
    headers: tuple[str, ...]
    shared: tuple[str, ...]
    platforms: tuple[str, ...] = ("linux-cuda",)


@dataclass(frozen=True)
class StockWheel:
    filename: str
    sha256: str


@dataclass
class NewBase:
    source: MlxTag
    build_stage_env: str
    dependencies: list[DependencyPin]
    libraries: list[LibraryPin] | None  # None: no stock CUDA wheel to take them from
    stock_wheels: list[StockWheel]
    missing: list[str]  # backend wheels: "linux-cuda x86_64 (CUDA 13): mlx-cuda-13 has no 0.31.2 release"
    frontend_gaps: list[str]  # `mlx` frontend wheels missing for a platform and Python
    notes: list[str] = field(default_factory=list)  # what the user must hear (unknown deps, extra tags)


def dependency_pins(declared: list[Declared], pinner: Pinner, notes: list[str]) -> list[DependencyPin]:
    by_name = {d.name: d for d in declared}
    pins: list[DependencyPin] = []
    for rule in DEPENDENCY_RULES:
        d = by_name.get(rule.name)
        if d is None:
            continue
        platforms = tuple(p for p in d.platforms if (not rule.platforms or p in rule.platforms)
                          and p not in rule.exclude)
        if not platforms:
            continue
        pin = DependencyPin(name=d.name, version=d.version, upstream=rule.upstream or d.upstream,
                            platforms=platforms, offline=rule.offline, consequence=rule.consequence,
                            comment=rule.comment, section=rule.section)
        if rule.offline == "git-export":
            if not d.repository or not d.tag:
                raise MlxForkError(f"{d.where}: {d.name} is a git-export pin but its repository and tag cannot "
                                   f"be read from {d.upstream}")
            commit, trees = pinner.resolve(d.name, d.repository, d.tag, [p for p, _ in rule.exports])
            pin = replace(pin, repository=d.repository, tag=d.tag, commit=commit,
                          exports=tuple(Export(p, to, t) for (p, to), t in zip(rule.exports, trees)))
        pins.append(pin)
    known = {r.name for r in DEPENDENCY_RULES}
    for d in declared:
        if d.name not in known:
            notes.append(f"{d.name} ({d.where}, {d.upstream}) is new: no offline rule, pinned online-only "
                         "(CMake downloads it); add a DependencyRule in build_tools/base_add.py")
            pins.append(DependencyPin(name=d.name, version=d.version, upstream=d.upstream, platforms=d.platforms,
                                      offline="online-only",
                                      consequence="no offline route in mlx-fork yet: CMake downloads it"))
    gone = sorted(known - set(by_name))
    if gone:
        notes.append(f"not declared in this tree (rules unused): {', '.join(gone)}")
    return pins


# ---------------------------------------------------------------- PyPI: stock wheels and libraries


def _wheel_tags(filename: str) -> tuple[str, str, list[str]]:
    """(python tag, abi tag, platform tags) of a wheel file name."""
    parts = filename[: -len(".whl")].split("-")
    return parts[-3], parts[-2], parts[-1].split(".")


def _linux_arch(platform_tag: str) -> str | None:
    m = re.fullmatch(r"(?:manylinux\d*|manylinux_\d+_\d+)_(x86_64|aarch64)", platform_tag)
    return m.group(1) if m else None


def _macos_target(platform_tag: str) -> str | None:
    m = re.fullmatch(r"macosx_(\d+)_(\d+)_arm64", platform_tag)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _slot(platform: str, dist: str, detail: str) -> str:
    cuda = re.fullmatch(r"mlx-cuda-(\d+)", dist)
    return f"{platform} {detail}" + (f" (CUDA {cuda.group(1)})" if cuda else "")


def stock_wheels(index: PackageIndex, version: str, notes: list[str]) -> tuple[list[StockWheel], list[str]]:
    """Every stock backend wheel of `version` for a platform mlx-fork targets, and the platforms with none.

    Order: the wheels `mlx-fork build` overlays without --platform (profiles.host_platform:
    linux-cpu on x86_64, macos-metal per deployment target) first, then every other one by file name.
    """
    found: list[StockWheel] = []
    missing: list[str] = []
    skipped: list[str] = []
    for dist, platform in BACKEND_DISTS:
        files = [f for f in index.releases(dist).get(version, []) if f.filename.endswith(".whl") and not f.yanked]
        seen: set[str] = set()
        for f in files:
            python, abi, tags = _wheel_tags(f.filename)
            slots = [a for t in tags if (a := _linux_arch(t))] if platform.startswith("linux") else \
                [m for t in tags if (m := _macos_target(t))]
            if python != "py3" or abi != "none" or not slots:
                skipped.append(f.filename)
                continue
            seen.update(slots)
            found.append(StockWheel(f.filename, f.sha256))
        expected = LINUX_ARCHES if platform.startswith("linux") else MACOS_TARGETS
        for slot in expected:
            if slot not in seen:
                why = f"{dist} has no {version} release" if not files else f"{dist} {version} has no such wheel"
                missing.append(f"{_slot(platform, dist, slot)}: {why}")
        extra = sorted(seen - set(expected))
        if extra:
            notes.append(f"{dist} {version} has wheels for {', '.join(extra)}, which profiles.py does not build for")
    if skipped:
        notes.append(f"not pinned (not a platform mlx-fork targets): {', '.join(sorted(skipped))}")

    return sorted(found, key=_stock_order), missing


def _stock_order(wheel: StockWheel) -> tuple[int, tuple[int, ...], str]:
    _, _, tags = _wheel_tags(wheel.filename)
    if wheel.filename.startswith("mlx_cpu-") and any(_linux_arch(t) == "x86_64" for t in tags):
        return (0, (0,), wheel.filename)
    targets = [tuple(int(x) for x in m.split(".")) for t in tags if (m := _macos_target(t))]
    if wheel.filename.startswith("mlx_metal-") and targets:
        return (0, min(targets), wheel.filename)
    return (1, (), wheel.filename)


def frontend_gaps(index: PackageIndex, version: str) -> list[str]:
    """Platforms and Pythons for which the stock `mlx` frontend wheel of `version` is missing."""
    files = [f.filename for f in index.releases("mlx").get(version, []) if not f.yanked]
    have: set[tuple[str, str]] = set()
    for name in files:
        if not name.endswith(".whl"):
            continue
        python, abi, tags = _wheel_tags(name)
        for t in tags:
            slot = _linux_arch(t) or (f"macos {_macos_target(t)}" if _macos_target(t) else None)
            if slot and python == abi:
                have.add((python, slot))
    gaps: list[str] = []
    for slot in [*LINUX_ARCHES, *(f"macos {t}" for t in MACOS_TARGETS)]:
        pythons = [p for p in FRONTEND_PYTHONS if ("cp" + p.replace(".", ""), slot) not in have]
        if pythons:
            gaps.append(f"mlx {version} frontend, {slot}: no wheel for Python {', '.join(pythons)}")
    return gaps


def library_pins(index: PackageIndex, version: str, notes: list[str]) -> list[LibraryPin] | None:
    """The nvidia-* wheels the stock mlx-cuda-13 (x86_64) wheel of `version` requires, each pinned.

    For each Requires-Dist: the newest final release that satisfies it and has a Linux
    x86_64 wheel, i.e. what pip installs next to the stock wheel on the day the pin is made.
    Ordered as LIBRARY_RULES, then any requirement no rule knows.
    """
    dist, arch = LIBRARIES_FROM
    wheels = [f for f in index.releases(dist).get(version, [])
              if f.filename.endswith(".whl") and not f.yanked
              and any(_linux_arch(t) == arch for t in _wheel_tags(f.filename)[2])]
    if not wheels:
        return None
    pins: list[LibraryPin] = []
    for text in requires_dist(index.metadata(wheels[0])):
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise MlxForkError(f"{wheels[0].filename}: unreadable Requires-Dist {text!r}: {exc}") from exc
        if req.marker is not None and not req.marker.evaluate({**LIBRARY_ENVIRONMENT, "extra": ""}):
            continue
        package = canonicalize_name(req.name)
        if package in LIBRARIES_NOT_PINNED:
            continue
        rule = LIBRARY_RULES.get(package)
        if rule is None:
            notes.append(f"{wheels[0].filename} requires {package}, which no LibraryRule in build_tools/base_add.py "
                         "describes: pinned with no headers or libraries to link")
            rule = LibraryRule(package.removeprefix("nvidia-").replace("-", "_"), (), ())
        chosen = _newest_wheel(index, package, req, arch)
        if chosen is None:
            raise MlxForkError(f"no release of {package} satisfies {text!r} with a Linux {arch} wheel on PyPI")
        chosen_version, wheel = chosen
        pins.append(LibraryPin(name=rule.name, package=package, version=chosen_version, wheel=wheel.filename,
                               sha256=wheel.sha256, headers=rule.headers, shared=rule.shared))
    order = list(LIBRARY_RULES)
    return sorted(pins, key=lambda p: order.index(p.package) if p.package in order else len(order))


def _newest_wheel(index: PackageIndex, package: str, req: Requirement, arch: str) -> tuple[str, DistFile] | None:
    candidates: list[tuple[Version, str, DistFile]] = []
    for text, files in index.releases(package).items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if version.is_prerelease or version.is_devrelease or not req.specifier.contains(version):
            continue
        wheels = sorted((f for f in files if f.filename.endswith(".whl") and not f.yanked
                         and any(_linux_arch(t) == arch for t in _wheel_tags(f.filename)[2])),
                        key=lambda f: f.filename)
        if wheels:
            candidates.append((version, text, wheels[0]))
    if not candidates:
        return None
    _, text, wheel = max(candidates, key=lambda c: c[0])
    return text, wheel


# ---------------------------------------------------------------- putting it together


def make_base(source: MlxTag, index: PackageIndex, pinner: Pinner) -> NewBase:
    notes: list[str] = []
    stage = build_stage_env(source.files.get("setup.py", ""))
    dependencies = dependency_pins(fetchcontent_declarations(source.files), pinner, notes)
    wheels, missing = stock_wheels(index, source.version, notes)
    gaps = frontend_gaps(index, source.version)
    libraries = library_pins(index, source.version, notes)
    return NewBase(source, stage, dependencies, libraries, wheels, missing, gaps, notes)


def _s(value: str) -> str:
    """A TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_s(v) for v in values) + "]"


def render(base: NewBase) -> str:
    """base.toml text; the comments are the same for every base (rules, not notes on one version)."""
    src = base.source
    out: list[str] = [
        f"# Pin of upstream MLX {src.tag}. Every field is checked: `mlx-fork source` refuses a",
        "# tree whose commit (git checkout) or computed git tree id (plain directory) differs.",
        "[base]",
        f"version = {_s(src.version)}",
        f"tag = {_s(src.tag)}",
        f"commit = {_s(src.commit)}",
        f"tree = {_s(src.tree)}",
        "# MLX publishes no sdist; the tag archive is the download fallback. GitHub tag",
        "# archives are not promised to be byte-stable, so the archive is verified by the",
        "# git tree id computed from its extracted files (MLX has no .gitattributes",
        "# export rules, so the exported tree equals the commit's tree).",
        f"archive_url = {_s(f'https://github.com/ml-explore/mlx/archive/refs/tags/{src.tag}.tar.gz')}",
        f"archive_prefix = {_s(f'mlx-{src.version}')}",  # GitHub: <repository>-<tag without v>
        "# How upstream setup.py selects the frontend/backend wheel build.",
        f"build_stage_env = {_s(base.build_stage_env)}",
        "",
        "# Every FetchContent_Declare in the tree. `offline` names how deps.py provides it",
        "# without network; see `mlx-fork doctor`.",
    ]
    sections_done: set[str] = set()
    for i, dep in enumerate(base.dependencies):
        if i:
            out.append("")
        if dep.section and dep.section not in sections_done:
            sections_done.add(dep.section)
            out.append(f"# {SECTION_COMMENTS[dep.section]}")
        if dep.comment:
            out.append(f"# {dep.comment}")
        out += ["[[dependencies]]", f"name = {_s(dep.name)}", f"version = {_s(dep.version)}",
                f"upstream = {_s(dep.upstream)}", f"platforms = {_list(dep.platforms)}", f"offline = {_s(dep.offline)}"]
        if dep.offline == "git-export":
            out += [f"repository = {_s(dep.repository)}", f"tag = {_s(dep.tag)}", f"commit = {_s(dep.commit)}"]
        if dep.consequence:
            out.append(f"consequence = {_s(dep.consequence)}")
        for export in dep.exports:
            out += ["[[dependencies.exports]]", f"path = {_s(export.path)}", f"to = {_s(export.to)}",
                    f"tree = {_s(export.tree)}"]
    out.append("")
    dist, arch = LIBRARIES_FROM
    if base.libraries is None:
        out += [f"# No [[libraries]]: PyPI has no {dist} {src.version} wheel for {arch}, whose Requires-Dist names the",
                "# nvidia-* wheels a linux-cuda build links against.", ""]
    else:
        out += [f"# Libraries a linux-cuda build links against: the nvidia-* wheels the stock {dist}",
                "# wheel requires, pinned here for the build (users get them from pip at install time)."]
        for lib in base.libraries:
            out += ["[[libraries]]", f"name = {_s(lib.name)}", f"package = {_s(lib.package)}",
                    f"version = {_s(lib.version)}", f"wheel = {_s(lib.wheel)}", f"sha256 = {_s(lib.sha256)}",
                    f"platforms = {_list(lib.platforms)}", f"headers = {_list(lib.headers)}",
                    f"shared = {_list(lib.shared)}", ""]
    out += ["# Stock backend wheels an overlay build starts from (PyPI file name and sha256).",
            "# The overlay replaces only libmlx; everything else is kept byte-identical."]
    if base.missing:
        out.append("# No stock wheel on PyPI for these (an overlay build there has nothing to start from):")
        out += [f"#   {m}" for m in base.missing]
    if base.frontend_gaps:
        out.append("# The stock `mlx` frontend (installed beside a backend wheel) has gaps on PyPI:")
        out += [f"#   {g}" for g in base.frontend_gaps]
    for i, wheel in enumerate(base.stock_wheels):
        if i:
            out.append("")
        out += ["[[stock_wheels]]", f"filename = {_s(wheel.filename)}", f"sha256 = {_s(wheel.sha256)}"]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- command line


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("base", help="pinned upstream bases (patches/<base>/base.toml)",
                            description="Pinned upstream bases.")
    cmds = parser.add_subparsers(dest="base_command", metavar="SUBCOMMAND")
    cmds.required = True
    p = cmds.add_parser(
        "add",
        help="write patches/vX.Y.Z/base.toml from MLX source and PyPI",
        description="Pin an upstream MLX release: commit, tree id, archive, every FetchContent dependency with "
        "its offline route (git-export pins resolved in the dependency's repository), the nvidia-* libraries of "
        "the stock CUDA wheel and every stock backend wheel on PyPI with its sha256. Says which platforms have "
        "no stock wheel.",
    )
    p.add_argument("tag", help="upstream release tag, e.g. v0.32.2")
    p.add_argument("--source", type=Path, required=True,
                   help="a git clone or mirror of https://github.com/ml-explore/mlx holding the tag")
    p.add_argument("--from", dest="sources", action="append", default=[], metavar="NAME=PATH|URL",
                   help="where a git-export dependency (fmt, cccl, cudnn, cutlass) is read from: a local clone or "
                   "mirror, or a URL; default: a shallow clone of its upstream repository")
    p.add_argument("--pypi", default=DEFAULT_PYPI, help=f"index with PyPI's JSON API (default {DEFAULT_PYPI})")
    p.add_argument("--output", type=Path, help="write here instead of patches/<tag>/base.toml ('-': stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing base.toml")
    p.add_argument("--record-pypi", type=Path, metavar="FILE",
                   help="also write the PyPI responses used, trimmed, to FILE (test fixtures)")
    p.add_argument("--work-dir", type=Path, help="scratch directory for dependency clones (default: the system's)")
    p.set_defaults(func=_cmd_add)


def parse_sources(specs: list[str]) -> dict[str, str]:
    names = sorted({r.name for r in DEPENDENCY_RULES if r.offline == "git-export"})
    sources: dict[str, str] = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or name not in names or not where:
            raise MlxForkError(f"--from {spec!r}: expected NAME=PATH with NAME one of {', '.join(names)}")
        sources[name] = where
    return sources


def _cmd_add(args: argparse.Namespace) -> int:
    target = args.output or patches_dir() / args.tag / "base.toml"
    if str(target) != "-" and target.exists() and not args.force:
        raise MlxForkError(f"{target} exists", hint="pass --force to replace it, or --output PATH to write elsewhere")
    source = read_mlx_tag(args.source, args.tag)
    index: PackageIndex = PyPI(args.pypi)
    recorder = RecordingIndex(index) if args.record_pypi else None
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    say(f"{args.tag}: commit {source.commit[:12]}, tree {source.tree[:12]}; asking {args.pypi} for its wheels")
    base = make_base(source, recorder or index, GitPinner(parse_sources(args.sources), args.work_dir))
    text = render(base)
    if recorder is not None:
        mlx_dists = {"mlx", *dict(BACKEND_DISTS)}
        # What the pin reads: the MLX wheels of this version; of a library, its Linux wheels for LIBRARIES_FROM.
        recorder.save(args.record_pypi,
                      keep_release=lambda project, version: project not in mlx_dists or version == source.version,
                      keep_file=lambda project, f: project in mlx_dists or (
                          f.filename.endswith(".whl")
                          and any(_linux_arch(t) == LIBRARIES_FROM[1] for t in _wheel_tags(f.filename)[2])))
    if str(target) == "-":
        print(text, end="")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        say(f"wrote {target}")
    for note in base.notes:
        say(f"note: {note}")
    say(f"{len(base.stock_wheels)} stock wheels pinned, {len(base.dependencies)} dependencies, "
        f"{'no' if base.libraries is None else len(base.libraries)} CUDA libraries")
    if base.missing:
        say("no stock backend wheel on PyPI for:")
        for m in base.missing:
            say(f"  {m}")
    else:
        say("every platform has its stock backend wheels")
    for gap in base.frontend_gaps:
        say(f"stock frontend gap: {gap}")
    return 0
