"""Small, honest wheel surgery: rename the version, replace or add files, regenerate RECORD.

In the spirit of pypa/wheel's `unpack` / `pack`: the output RECORD lists every
file of the output wheel with the sha256 and size of the bytes actually
written, and nothing else; signatures of the input (RECORD.jws/.p7s) are
dropped because they no longer hold. Entries keep their order, timestamps and
permission bits; .dist-info comes last and RECORD is the last member.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from .errors import MlxForkError

_SIGNATURES = ("RECORD.jws", "RECORD.p7s")


def record_digest(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def escape_name(name: str) -> str:
    """Distribution name as it appears in wheel and .dist-info names (PEP 427/503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


@dataclass(frozen=True)
class WheelInfo:
    path: Path
    name: str  # canonical distribution name, e.g. "mlx-cpu"
    version: Version
    tags: str  # "py3-none-manylinux_2_35_x86_64"

    @property
    def dist_info(self) -> str:
        return f"{escape_name(self.name)}-{self.version}.dist-info"


def wheel_info(path: Path) -> WheelInfo:
    try:
        name, version, _build, _tags = parse_wheel_filename(path.name)
    except Exception as exc:  # packaging raises InvalidWheelFilename
        raise MlxForkError(f"{path.name} is not a wheel file name: {exc}") from exc
    # The last three dash-separated fields are always python-abi-platform.
    tag_text = "-".join(path.name[:-4].split("-")[-3:])
    return WheelInfo(path, str(canonicalize_name(name)), version, tag_text)


def wheel_filename(name: str, version: str, tags: str) -> str:
    return f"{escape_name(name)}-{version}-{tags}.whl"


def _find_dist_info(names: list[str]) -> str:
    dirs = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info") and "/" in n}
    if len(dirs) != 1:
        raise MlxForkError(f"expected exactly one .dist-info directory in the wheel, found {sorted(dirs)}")
    return dirs.pop()


def _set_metadata_version(text: str, version: str) -> str:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("Version:"):
            lines[i] = f"Version: {version}"
            return "\n".join(lines)
        if line == "":  # end of headers
            break
    raise MlxForkError("wheel METADATA has no Version header")


def rewrite_wheel(
    source: Path,
    dest_dir: Path,
    *,
    version: str | None = None,
    replace: Mapping[str, bytes] | None = None,
    add: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a copy of `source` into `dest_dir` with a new version and changed files.

    `replace` maps archive paths (of the input) to new contents: every key must
    exist. `add` maps new archive paths to contents: none may exist.
    Returns the path of the new wheel.
    """
    info = wheel_info(source)
    replace = dict(replace or {})
    add = dict(add or {})
    new_version = version or str(info.version)
    Version(new_version)  # refuse anything that is not PEP 440
    out_name = wheel_filename(info.name, new_version, info.tags)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out_path = dest_dir / out_name
    tmp_path = dest_dir / (out_name + ".part")
    with zipfile.ZipFile(source) as zin:
        infos = [i for i in zin.infolist() if not i.is_dir()]
        names = [i.filename for i in infos]
        old_dist_info = _find_dist_info(names)
        new_dist_info = f"{escape_name(info.name)}-{new_version}.dist-info"
        missing = sorted(set(replace) - set(names))
        if missing:
            raise MlxForkError(f"{source.name} has no {', '.join(missing)} to replace")
        clash = sorted(set(add) & set(names))
        if clash:
            raise MlxForkError(f"{source.name} already has {', '.join(clash)}")
        records: list[tuple[str, str, int]] = []
        body: list[tuple[zipfile.ZipInfo, bytes]] = []
        meta: list[tuple[zipfile.ZipInfo, bytes]] = []
        for item in infos:
            name = item.filename
            top, _, rest = name.partition("/")
            if top == old_dist_info and rest in ("RECORD",) + _SIGNATURES:
                continue
            data = replace[name] if name in replace else zin.read(item)
            arcname = name
            if top == old_dist_info:
                arcname = f"{new_dist_info}/{rest}"
                if rest == "METADATA":
                    data = _set_metadata_version(data.decode("utf-8"), new_version).encode("utf-8")
            zinfo = zipfile.ZipInfo(arcname, date_time=item.date_time)
            zinfo.external_attr = item.external_attr
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            (meta if top == old_dist_info else body).append((zinfo, data))
        for name, data in add.items():
            zinfo = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zinfo.external_attr = (0o100644 << 16)
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            (meta if name.startswith(new_dist_info + "/") else body).append((zinfo, data))
    record_name = f"{new_dist_info}/RECORD"
    try:
        with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as zout:
            for zinfo, data in body + meta:
                zout.writestr(zinfo, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
                records.append((zinfo.filename, record_digest(data), len(data)))
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for row in records:
                writer.writerow(row)
            writer.writerow((record_name, "", ""))
            rinfo = zipfile.ZipInfo(record_name, date_time=(2020, 1, 1, 0, 0, 0))
            rinfo.external_attr = (0o100644 << 16)
            zout.writestr(rinfo, buf.getvalue().encode("utf-8"), compress_type=zipfile.ZIP_DEFLATED)
        tmp_path.replace(out_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return out_path


def check_record(wheel: Path) -> list[str]:
    """Problems with a wheel's RECORD (empty list: every file listed with the right hash and size)."""
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        dist_info = _find_dist_info(names)
        record_name = f"{dist_info}/RECORD"
        if record_name not in names:
            return [f"no {record_name}"]
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode("utf-8"))))
        listed: dict[str, tuple[str, str]] = {}
        for row in rows:
            if not row:
                continue
            if len(row) != 3:
                problems.append(f"malformed RECORD row {row!r}")
                continue
            if row[0] in listed:
                problems.append(f"{row[0]} listed twice")
            listed[row[0]] = (row[1], row[2])
        for name in names:
            if name not in listed:
                problems.append(f"{name} is in the wheel but not in RECORD")
                continue
            digest, size = listed[name]
            if name == record_name or name in (f"{dist_info}/{s}" for s in _SIGNATURES):
                continue
            data = zf.read(name)
            if digest != record_digest(data):
                problems.append(f"{name}: RECORD hash {digest} does not match its content")
            if size != str(len(data)):
                problems.append(f"{name}: RECORD size {size} != {len(data)}")
        for name in listed:
            if name not in names:
                problems.append(f"{name} is in RECORD but not in the wheel")
    return problems


def read_member(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(name)
        except KeyError as exc:
            raise MlxForkError(f"{wheel.name} has no {name}") from exc


def member_sha256(wheel: Path, name: str) -> str:
    return hashlib.sha256(read_member(wheel, name)).hexdigest()


def metadata_field(wheel: Path, field_name: str) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        dist_info = _find_dist_info(zf.namelist())
        text = zf.read(f"{dist_info}/METADATA").decode("utf-8")
    values = []
    for line in text.split("\n"):
        if line == "":
            break
        if line.startswith(f"{field_name}:"):
            values.append(line.split(":", 1)[1].strip())
    return values


def wheel_tags(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        dist_info = _find_dist_info(zf.namelist())
        text = zf.read(f"{dist_info}/WHEEL").decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
