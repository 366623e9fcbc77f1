"""Which libmlx an environment loads, and what it says: one probe for verify, validate and stack.

The probe runs inside the environment under test (a fresh venv, a validation
side, an exported venvstacks layer), so it uses the standard library only, and
is passed to that interpreter as `python -c` source: `probe_command` builds the
command, `parse_probe` reads its answer. It prints one JSON object:

  version           mx.__version__, which the loaded libmlx reports
  loaded            the libmlx file the dynamic loader mapped into the process
                    (/proc/self/maps; dyld's image list on macOS), resolved
  loaded_sha256     its sha256
  installed         mlx/lib/<library> of the imported mlx package, resolved
                    (default: the first libmlx.* there)
  installed_sha256  its sha256 (None if there is no such file)
  provenance_path   mlx/lib/mlx-fork.json beside it, which mlx-fork wheels carry (else None)
  provenance        its contents
  value             (mx.array([1, 2, 3]) * 2 + 1).sum().item(): 15.0 when a computation runs
  default_device    str(mx.default_device())
  python            the interpreter's version
  distributions     installed versions of mlx, mlx-cpu, mlx-metal and numpy (None where absent)
  gguf              with --gguf only: whether mx.save_gguf works (MLX_BUILD_GGUF=OFF raises)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTIONS = ("mlx", "mlx-cpu", "mlx-metal", "numpy")


def probe_command(python: Path, *, isolated: bool, library: str | None = None, gguf: bool = False) -> list[str]:
    """The command that runs the probe in `python`'s environment.

    `isolated` (-I): neither the working directory nor PYTHON* variables can put
    another `mlx` in front of the installed one.
    """
    args = (["--library", library] if library else []) + (["--gguf"] if gguf else [])
    return [str(python), *(["-I"] if isolated else []), "-c", Path(__file__).read_text(encoding="utf-8"), *args]


def parse_probe(stdout: str) -> dict[str, Any]:
    """The probe's answer: the JSON object on its last line of output."""
    lines = stdout.strip().splitlines()
    if not lines:
        raise ValueError("the probe printed nothing")
    answer = json.loads(lines[-1])
    if not isinstance(answer, dict):
        raise ValueError(f"the probe printed {lines[-1][:200]!r}, not a JSON object")
    return answer


def loaded_libmlx() -> str | None:
    """The libmlx file the dynamic loader mapped into this process."""
    if sys.platform == "darwin":  # no /proc: ask dyld for its image list
        import ctypes

        dyld = ctypes.CDLL("/usr/lib/libSystem.B.dylib")
        dyld._dyld_image_count.restype = ctypes.c_uint32
        dyld._dyld_get_image_name.restype = ctypes.c_char_p
        dyld._dyld_get_image_name.argtypes = [ctypes.c_uint32]
        for i in range(dyld._dyld_image_count()):
            path = dyld._dyld_get_image_name(i).decode()
            if os.path.basename(path).startswith("libmlx."):
                return str(path)
        return None
    with open("/proc/self/maps", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            path = fields[-1] if len(fields) >= 6 else ""
            if os.path.basename(path).startswith("libmlx."):
                return path
    return None


def _sha256(path: str | None) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str]) -> None:
    import mlx.core as mx

    library = argv[argv.index("--library") + 1] if "--library" in argv else None
    loaded = loaded_libmlx()
    # mlx is spread over the frontend and backend wheels; mlx.core (the frontend's
    # extension module) sits in the installed mlx/ dir, the backend's libmlx in mlx/lib.
    lib_dir = os.path.join(os.path.dirname(os.path.realpath(mx.__file__)), "lib")
    if library is None:
        names = sorted(n for n in os.listdir(lib_dir) if n.startswith("libmlx.")) if os.path.isdir(lib_dir) else []
        library = names[0] if names else "libmlx"
    installed = os.path.realpath(os.path.join(lib_dir, library))
    provenance_path = os.path.join(lib_dir, "mlx-fork.json")
    provenance = None
    if os.path.isfile(provenance_path):
        with open(provenance_path, encoding="utf-8") as fh:
            provenance = json.load(fh)
    answer: dict[str, Any] = {
        "version": mx.__version__,
        "loaded": os.path.realpath(loaded) if loaded else None,
        "loaded_sha256": _sha256(loaded),
        "installed": installed,
        "installed_sha256": _sha256(installed),
        "provenance_path": os.path.realpath(provenance_path) if provenance is not None else None,
        "provenance": provenance,
        "value": (mx.array([1.0, 2.0, 3.0]) * 2 + 1).sum().item(),
        "default_device": str(mx.default_device()),
        "python": sys.version.split()[0],
        "distributions": {dist: _version(dist) for dist in DISTRIBUTIONS},
    }
    if "--gguf" in argv:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                mx.save_gguf(os.path.join(tmp, "t.gguf"), {"x": mx.ones((2,))})
            answer["gguf"] = True
        except Exception:
            answer["gguf"] = False
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv[1:])
