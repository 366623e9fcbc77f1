"""wheels/ as a PEP 503 simple index: wheels/simple/<project>/index.html with sha256 fragments.

Works both ways a user points an installer at it:
  pip install --find-links wheels/ ...            (reads the directory)
  pip install --index-url file://.../wheels/simple ...   (reads the index)
Every page is written to a temporary file and renamed into place, so a reader
never sees a half-written page; projects whose wheels are gone are removed.
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from .digest import sha256_file
from .errors import MlxForkError
from .paths import wheels_dir
from .proc import say
from .wheelfile import wheel_info

SIMPLE = "simple"


@dataclass(frozen=True)
class IndexEntry:
    project: str  # PEP 503 normalized name
    filename: str
    sha256: str




def scan(directory: Path) -> list[IndexEntry]:
    entries = []
    for path in sorted(directory.glob("*.whl")):
        info = wheel_info(path)
        entries.append(IndexEntry(str(canonicalize_name(info.name)), path.name, sha256_file(path)))
    return entries


def _page(title: str, links: list[tuple[str, str]]) -> str:
    body = "\n".join(f'    <a href="{html.escape(href, quote=True)}">{html.escape(text)}</a><br/>'
                     for href, text in links)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".index-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_index(directory: Path | None = None) -> list[IndexEntry]:
    """(Re)write directory/simple for the wheels in `directory`."""
    directory = directory or wheels_dir()
    if not directory.is_dir():
        raise MlxForkError(f"{directory} does not exist", hint="build a wheel first: mlx-fork build")
    entries = scan(directory)
    root = directory / SIMPLE
    projects: dict[str, list[IndexEntry]] = {}
    for entry in entries:
        projects.setdefault(entry.project, []).append(entry)
    for project, items in projects.items():
        links = [(f"../../{e.filename}#sha256={e.sha256}", e.filename) for e in items]
        _write_atomic(root / project / "index.html", _page(f"Links for {project}", links))
    _write_atomic(root / "index.html", _page("Simple index", [(f"{p}/", p) for p in sorted(projects)]))
    for stale in root.iterdir():
        if stale.is_dir() and stale.name not in projects:
            shutil.rmtree(stale)
    return entries


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "index",
        help="(re)write the PEP 503 simple index of wheels/",
        description="Write wheels/simple/ (PEP 503, sha256 fragments) for the wheels in the directory.",
    )
    parser.add_argument("--dir", type=Path, default=None, help="wheel directory (default: wheels/)")
    parser.set_defaults(func=_cmd_index)


def _cmd_index(args: argparse.Namespace) -> int:
    directory = args.dir or wheels_dir()
    entries = write_index(directory)
    for entry in entries:
        print(f"{entry.project:12} {entry.filename}  sha256={entry.sha256[:16]}...")
    say(f"index: {directory / SIMPLE}/ ({len(entries)} wheels); use --index-url {(directory / SIMPLE).resolve().as_uri()}")
    return 0
