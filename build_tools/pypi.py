"""What PyPI publishes for a project: its files with sha256, and a wheel's metadata.

`mlx-fork base add` asks PyPI which stock MLX wheels exist for a version and
which nvidia-* wheels the stock CUDA wheel requires. Everything it needs goes
through the `PackageIndex` protocol, so tests replay recorded responses
(`RecordedIndex`) instead of reaching the network:

  releases(project)   every release and its files (PyPI's JSON API,
                      https://pypi.org/pypi/<project>/json)
  metadata(file)      a wheel's METADATA: PEP 658's `<url>.metadata`, else read
                      out of the wheel itself with HTTP range requests (the
                      zip's central directory and one member, not the whole file)

`RecordingIndex` wraps a real index and keeps, trimmed to the fields used, what
was asked: that is how the test fixtures are made (`base add --record-pypi`).
"""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import MlxForkError

DEFAULT_PYPI = "https://pypi.org"


@dataclass(frozen=True)
class DistFile:
    """One file of a release on the index."""

    filename: str
    sha256: str
    url: str
    yanked: bool = False


class PackageIndex(Protocol):
    def releases(self, project: str) -> dict[str, list[DistFile]]:
        """version -> files; an unknown project has no releases."""
        ...

    def metadata(self, file: DistFile) -> str:
        """The wheel's METADATA file (RFC 822 headers, then the description)."""
        ...


def parse_project_json(data: dict[str, Any], base_url: str) -> dict[str, list[DistFile]]:
    """PyPI's project JSON -> version -> files (URLs made absolute)."""
    releases: dict[str, list[DistFile]] = {}
    for version, files in data.get("releases", {}).items():
        releases[version] = [
            DistFile(
                filename=str(f["filename"]),
                sha256=str(f["digests"]["sha256"]),
                url=urllib.parse.urljoin(base_url, str(f.get("url", ""))),
                yanked=bool(f.get("yanked", False)),
            )
            for f in files
        ]
    return releases


def requires_dist(metadata: str) -> list[str]:
    """The Requires-Dist values of a METADATA text, in order."""
    headers = metadata.split("\n\n", 1)[0]
    return [m.group(1).strip() for m in re.finditer(r"(?m)^Requires-Dist:[ \t]*(.+)$", headers)]


class PyPI:
    """The JSON API of a PyPI-compatible index (default https://pypi.org)."""

    def __init__(self, url: str = DEFAULT_PYPI, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._cache: dict[str, dict[str, list[DistFile]]] = {}

    def releases(self, project: str) -> dict[str, list[DistFile]]:
        if project not in self._cache:
            url = f"{self.url}/pypi/{project}/json"
            try:
                data = json.loads(self._get(url))
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise MlxForkError(f"{url}: HTTP {exc.code}", hint="is --pypi a PyPI-compatible index?") from exc
                data = {}
            self._cache[project] = parse_project_json(data, url)
        return self._cache[project]

    def metadata(self, file: DistFile) -> str:
        try:
            return self._get(file.url + ".metadata").decode("utf-8")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise MlxForkError(f"{file.url}.metadata: HTTP {exc.code}") from exc
        return wheel_metadata_by_ranges(file, self.timeout)

    def _get(self, url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError:
            raise
        except OSError as exc:
            raise MlxForkError(f"could not reach {url}: {exc}",
                               hint="base add needs PyPI (or --pypi URL, an index with PyPI's JSON API)") from exc


class _HttpRangeReader(io.RawIOBase):
    """A seekable read-only view of a remote file; each read is one HTTP range request."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.position = 0
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            self.size = int(response.headers["Content-Length"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.position >= self.size or len(buffer) == 0:
            return 0
        end = min(self.size, self.position + len(buffer)) - 1
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={self.position}-{end}"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            data = response.read()
            if response.status != 206:  # the server sent the whole file: take our slice
                data = data[self.position:end + 1]
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)


def wheel_metadata_by_ranges(file: DistFile, timeout: float = 60) -> str:
    """`*.dist-info/METADATA` of a remote wheel, reading only the zip directory and that member."""
    try:
        reader = io.BufferedReader(_HttpRangeReader(file.url, timeout), buffer_size=256 * 1024)
        with zipfile.ZipFile(reader) as zf:
            names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) != 1:
                raise MlxForkError(f"{file.filename}: expected one *.dist-info/METADATA, found {names}")
            return zf.read(names[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise MlxForkError(f"could not read the metadata of {file.filename} from {file.url}: {exc}") from exc


# ---------------------------------------------------------------- recorded responses (tests)


def _trim_metadata(text: str) -> str:
    """Only the headers `base add` reads: Name, Version, Requires-Dist."""
    headers = text.split("\n\n", 1)[0].splitlines()
    return "\n".join(h for h in headers if h.split(":", 1)[0] in ("Metadata-Version", "Name", "Version",
                                                                  "Requires-Dist")) + "\n"


class RecordingIndex:
    """Passes calls to `inner` and keeps what they returned, trimmed, for `save`."""

    def __init__(self, inner: PackageIndex) -> None:
        self.inner = inner
        self.projects: dict[str, dict[str, list[DistFile]]] = {}
        self.metadata_texts: dict[str, str] = {}

    def releases(self, project: str) -> dict[str, list[DistFile]]:
        found = self.inner.releases(project)
        self.projects[project] = found
        return found

    def metadata(self, file: DistFile) -> str:
        text = self.inner.metadata(file)
        self.metadata_texts[file.filename] = _trim_metadata(text)
        return text

    def save(self, path: Path, keep_release: Callable[[str, str], bool] = lambda project, version: True,
             keep_file: Callable[[str, DistFile], bool] = lambda project, file: True) -> None:
        """Write the responses as JSON, only the releases and files the predicates keep (what was used)."""
        projects: dict[str, dict[str, list[list[object]]]] = {}
        for name, releases in sorted(self.projects.items()):
            projects[name] = {
                version: [[f.filename, f.sha256, f.yanked] for f in files if keep_file(name, f)]
                for version, files in releases.items()
                if keep_release(name, version)
            }
        # One file per line: small diffs when a fixture is recorded again.
        lines = ['{', ' "projects": {']
        for i, (name, kept) in enumerate(projects.items()):
            lines.append(f'  {json.dumps(name)}: {{')
            for j, (version, files) in enumerate(kept.items()):
                rows = ",\n".join(f"    {json.dumps(f)}" for f in files)
                end = "," if j < len(kept) - 1 else ""
                listed = f"[\n{rows}\n   ]" if files else "[]"
                lines.append(f"   {json.dumps(version)}: {listed}{end}")
            lines.append("  }" + ("," if i < len(projects) - 1 else ""))
        lines += [" },", f' "metadata": {json.dumps(dict(sorted(self.metadata_texts.items())), indent=1)}', "}"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class RecordedIndex:
    """An index answering from a file written by `RecordingIndex.save`."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        self.path = path
        self.projects: dict[str, dict[str, list[DistFile]]] = {
            name: {version: [DistFile(str(f[0]), str(f[1]), f"recorded:{f[0]}", bool(f[2])) for f in files]
                   for version, files in releases.items()}
            for name, releases in data["projects"].items()
        }
        self.metadata_texts: dict[str, str] = dict(data["metadata"])

    def releases(self, project: str) -> dict[str, list[DistFile]]:
        if project not in self.projects:
            raise MlxForkError(f"{self.path}: no recorded releases of {project}")
        return self.projects[project]

    def metadata(self, file: DistFile) -> str:
        if file.filename not in self.metadata_texts:
            raise MlxForkError(f"{self.path}: no recorded metadata of {file.filename}")
        return self.metadata_texts[file.filename]
