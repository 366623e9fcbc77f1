"""Git tree ids computed from plain files, without git.

`mlx-fork source` uses this to prove that a directory (an extracted archive, a
copy) holds exactly the pinned upstream tree. The rules follow git's object
format: blobs are hashed as "blob <size>\\0<bytes>", a tree lists entries sorted
by name (directories sort as if their name ended in "/"), regular files are
100644, files with the owner's execute bit 100755, symlinks 120000 (the blob is
the link target), and empty directories do not exist for git.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# Never part of a source tree as committed.
IGNORED_NAMES = frozenset({".git"})


@dataclass(frozen=True)
class TreeSummary:
    tree: str
    files: int


def hash_object(kind: str, data: bytes) -> str:
    header = f"{kind} {len(data)}\0".encode()
    return hashlib.sha1(header + data).hexdigest()


def _entry_for(path: Path) -> tuple[str, bytes, int] | None:
    """(mode, binary sha, file count) for one directory entry; None if git would not record it."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path).encode()
        return "120000", bytes.fromhex(hash_object("blob", target)), 1
    if stat.S_ISDIR(st.st_mode):
        sub = _tree(path)
        if sub is None:
            return None
        return "40000", bytes.fromhex(sub.tree), sub.files
    if stat.S_ISREG(st.st_mode):
        mode = "100755" if st.st_mode & stat.S_IXUSR else "100644"
        return mode, bytes.fromhex(hash_object("blob", path.read_bytes())), 1
    raise ValueError(f"{path}: not a file, directory or symlink; git cannot record it")


def _tree(directory: Path) -> TreeSummary | None:
    entries: list[tuple[bytes, str, bytes]] = []
    files = 0
    for child in directory.iterdir():
        if child.name in IGNORED_NAMES:
            continue
        entry = _entry_for(child)
        if entry is None:
            continue
        mode, sha, count = entry
        files += count
        name = child.name.encode("utf-8", "surrogateescape")
        sort_key = name + b"/" if mode == "40000" else name
        entries.append((sort_key, mode, sha + b"\0" + name))
    if not entries:
        return None
    entries.sort(key=lambda e: e[0])
    body = b"".join(mode.encode() + b" " + rest[21:] + b"\0" + rest[:20] for _, mode, rest in entries)
    return TreeSummary(hash_object("tree", body), files)


def tree_id(directory: Path) -> TreeSummary:
    """The git tree id of `directory` as if all its files were committed."""
    summary = _tree(directory)
    if summary is None:
        return TreeSummary(hash_object("tree", b""), 0)
    return summary
