"""The build manifest: every input of a build, and the local version label derived from it.

Label scheme: `fork.<N>.h<hash>`
  N     the number of patches in the applied series (0 for a stock rebuild),
        so a glance at a version tells how much of the series it carries;
  hash  the first 10 hex digits of the sha256 of the canonical JSON of the
        manifest's `inputs` (base commit and tree, each patch's sha256, the
        platform profile, the CMake flags, the dependency identities, the
        toolchain versions, macOS SDK and deployment target, the packaging
        mode and the stock wheel's sha256). Any change of any input changes it.
Run-time version (what `mx.__version__` reports): `<version>.0+<label>`.
Upstream's own test_version, and downstream code like it, int()s the first
three dot-separated parts, which a label on the third part ("1+fork") breaks.
PEP 440 pads release segments with zeros, so `0.31.1.0+<label>` still equals
`0.31.1+<label>` (the wheel version) and matches `==0.31.1`.

The `h` keeps the segment alphanumeric: PEP 440 normalises an all-digit local
segment to an integer (dropping leading zeros), which would make the version
in the file name differ from the one pip reports.

Machine paths never enter `inputs` (dependency paths are recorded as
identities, e.g. "system fmt 9.1.0"), so two machines with the same toolchain
produce the same label for the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
HASH_DIGITS = 10
_PATH_ARG = re.compile(r"^(-D[A-Za-z0-9_]+(?::[A-Z]+)?=)(/.*)$")


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def inputs_digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


def make_label(inputs: dict[str, Any]) -> str:
    patches = inputs.get("patches", [])
    return f"fork.{len(patches)}.h{inputs_digest(inputs)[:HASH_DIGITS]}"


def normalize_cmake_args(args: list[str]) -> list[str]:
    """CMake flags as recorded in the manifest: absolute path values replaced by a placeholder.

    Paths point into the work directory (dependency shims) and differ between
    machines; what they provide is recorded separately as dependency identities.
    `-DMLX_VERSION` is the output of the label, not an input, and is left out.
    """
    kept = []
    for arg in args:
        if arg.startswith("-DMLX_VERSION="):
            continue
        match = _PATH_ARG.match(arg)
        kept.append(f"{match.group(1)}<path>" if match else arg)
    return kept


def runtime_version(base_version: str, label: str) -> str:
    return f"{base_version}.0+{label}"


@dataclass(frozen=True)
class BaseRef:
    """The pinned upstream tree a build starts from."""

    name: str  # the folder under patches/, e.g. "v0.31.1"
    version: str
    tag: str
    commit: str
    tree: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "tag": self.tag, "commit": self.commit, "tree": self.tree}


@dataclass(frozen=True)
class FileRef:
    """A file by name and sha256: a patch of the series, the stock wheel."""

    name: str
    sha256: str


@dataclass
class BuildInputs:
    """Everything that shapes the built library; the label is the hash of `to_json()`."""

    base: BaseRef
    patches: list[FileRef]
    platform: str  # a profile name (profiles.PLATFORMS)
    packaging: str  # "overlay" or "full"
    cmake_args: list[str]  # normalize_cmake_args: no machine paths
    dependencies: dict[str, str]  # dependency -> identity ("system fmt 9.1.0")
    toolchain: dict[str, str | None]  # tool -> version line; the deployment target on macOS
    stock_wheel: FileRef
    build_env: dict[str, str] | None = None  # the profile's environment (e.g. CUDAARCHS); None: none

    @property
    def deployment_target(self) -> str | None:
        return self.toolchain.get("deployment_target")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "base": self.base.to_json(),
            "patches": [{"name": p.name, "sha256": p.sha256} for p in self.patches],
            "platform": self.platform,
            "packaging": self.packaging,
            "cmake_args": list(self.cmake_args),
            "dependencies": dict(self.dependencies),
            "toolchain": dict(self.toolchain),
            "stock_wheel": {"filename": self.stock_wheel.name, "sha256": self.stock_wheel.sha256},
        }
        if self.build_env is not None:
            data["build_env"] = dict(self.build_env)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildInputs:
        wheel = data["stock_wheel"]
        return cls(
            base=BaseRef(**data["base"]),
            patches=[FileRef(p["name"], p["sha256"]) for p in data["patches"]],
            platform=data["platform"],
            packaging=data["packaging"],
            cmake_args=list(data["cmake_args"]),
            dependencies=dict(data["dependencies"]),
            toolchain=dict(data["toolchain"]),
            stock_wheel=FileRef(wheel["filename"], wheel["sha256"]),
            build_env=dict(data["build_env"]) if "build_env" in data else None,
        )


@dataclass
class Manifest:
    inputs: BuildInputs
    outputs: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # not hashed: timestamps, log paths, host

    @property
    def label(self) -> str:
        return make_label(self.inputs.to_json())

    @property
    def base_version(self) -> str:
        return self.inputs.base.version

    @property
    def version(self) -> str:
        return f"{self.base_version}+{self.label}"

    @property
    def runtime_version(self) -> str:
        """The version compiled into libmlx (-DMLX_VERSION); see the module docstring."""
        return runtime_version(self.base_version, self.label)

    def to_json(self) -> dict[str, Any]:
        inputs = self.inputs.to_json()
        return {
            "schema": SCHEMA,
            "tool": "mlx-fork",
            "version": self.version,
            "runtime_version": self.runtime_version,
            "label": self.label,
            "inputs_sha256": inputs_digest(inputs),
            "inputs": inputs,
            "outputs": self.outputs,
            "info": self.info,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(inputs=BuildInputs.from_json(data["inputs"]), outputs=data.get("outputs", {}),
                   info=data.get("info", {}))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.from_json(json.loads(path.read_text()))


def compare_provenance(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Differences between a manifest and a provenance file, as readable lines (empty: equal)."""
    problems = []
    for key in ("version", "label", "inputs_sha256"):
        if expected.get(key) != found.get(key):
            problems.append(f"{key}: expected {expected.get(key)!r}, found {found.get(key)!r}")
    exp_inputs, got_inputs = expected.get("inputs", {}), found.get("inputs", {})
    for key in sorted(set(exp_inputs) | set(got_inputs)):
        if exp_inputs.get(key) != got_inputs.get(key):
            problems.append(f"inputs.{key}: expected {exp_inputs.get(key)!r}, found {got_inputs.get(key)!r}")
    exp_out, got_out = expected.get("outputs", {}), found.get("outputs", {})
    for key in ("libmlx_sha256",):
        if exp_out.get(key) != got_out.get(key):
            problems.append(f"outputs.{key}: expected {exp_out.get(key)!r}, found {got_out.get(key)!r}")
    return problems
