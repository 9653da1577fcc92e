"""Confinement of file access to the folders the user allowed.

An agent may have been talked into asking for ``~/.ssh/id_rsa`` or ``/dev/zero``; paths are resolved
(``~``, ``..``, symlinks) before the check, and only regular files are read. An MCP client's roots can
only narrow the allowed folders, never add to them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class PathNotAllowed(Exception):
    """The path is outside the allowed folders, or is not the kind of file the tool needs."""


NO_FOLDER_ALLOWED = (
    "No folder is open to the file tools: the server was started without --allow-dir or BATCH_MCP_ALLOWED_DIRS, "
    "in a working directory too broad to allow by default (/, the home folder or a system folder). Restart it "
    "with --allow-dir FOLDER (repeatable), or set BATCH_MCP_ALLOWED_DIRS=FOLDER in the MCP client's server "
    "config, naming the folder that holds the batch files."
)


def local_file_uri(uri: str) -> Path | None:
    """The path a ``file:`` URI names on this machine, or None if it names another host."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parts.path))


def as_path(raw: str | os.PathLike[str]) -> Path:
    """What the agent passed, as a path: ``~`` expanded, a ``file://`` URI converted."""
    text = os.fspath(raw)
    if text[:5].lower() == "file:":
        local = local_file_uri(text)
        if local is None:
            raise PathNotAllowed(f"'{text}' is a file URI on another machine; pass a path on this one "
                                 "(a plain path such as data/requests.jsonl is simplest).")
        text = str(local)
    if "\0" in text:
        raise PathNotAllowed(f"{text!r} contains a NUL character, which no file name can hold; pass the path "
                             "without it.")
    return Path(text).expanduser()


class Workspace:
    def __init__(self, allowed_dirs: Iterable[Path]) -> None:
        self.allowed_dirs = [Path(d).expanduser().resolve() for d in allowed_dirs]

    def narrowed_to(self, roots: Iterable[Path]) -> Workspace:
        """The part of this workspace inside the MCP client's roots (a root inside an allowed folder narrows
        access to it; a root holding an allowed folder keeps that folder; a root elsewhere is ignored), or
        this workspace when no root meets it. Roots come from the client, so they never widen access."""
        kept: list[Path] = []
        for root in (Path(r).resolve() for r in roots):
            kept += [root] if self.allows(root) else [d for d in self.allowed_dirs if d.is_relative_to(root)]
        return Workspace(list(dict.fromkeys(kept))) if kept else self

    def allows(self, real: Path) -> bool:
        return any(real.is_relative_to(d) for d in self.allowed_dirs)

    def describe(self) -> str:
        return ", ".join(str(d) for d in self.allowed_dirs)

    def resolve(self, raw: str | os.PathLike[str], *, base: Path | None = None) -> Path:
        """The real path of ``raw`` (relative paths start at the first allowed folder), if it is allowed."""
        if not self.allowed_dirs:
            raise PathNotAllowed(NO_FOLDER_ALLOWED)
        path = as_path(raw)
        if not path.is_absolute():
            path = (base or self.allowed_dirs[0]) / path
        real = path.resolve()
        if not self.allows(real):
            raise PathNotAllowed(
                f"'{raw}' resolves to {real}, which is outside the allowed folders ({self.describe()}). "
                "Move the file into one of them, or restart the server with --allow-dir FOLDER "
                "(or BATCH_MCP_ALLOWED_DIRS) to allow another folder."
            )
        return real

    def input_file(self, raw: str | os.PathLike[str]) -> Path:
        """An allowed, existing, regular file: never a directory, device, FIFO or socket."""
        real = self.resolve(raw)
        try:
            mode = real.stat().st_mode
        except FileNotFoundError:
            raise PathNotAllowed(f"'{raw}' does not exist (looked for {real}). Check the path; relative paths "
                                 f"start at {self.allowed_dirs[0]}.") from None
        if stat.S_ISDIR(mode):
            raise PathNotAllowed(f"'{raw}' is a directory; pass the path of a .jsonl file inside it.")
        if not stat.S_ISREG(mode):
            raise PathNotAllowed(f"'{raw}' is not a regular file (device, FIFO or socket); pass a .jsonl file.")
        return real

    def output_dir(self, raw: str | os.PathLike[str] | None, default: Path) -> Path:
        """An allowed folder to write into, created if missing."""
        real = self.resolve(raw) if raw else self.resolve(default)
        if real.exists() and not real.is_dir():
            raise PathNotAllowed(f"'{raw}' exists and is not a folder; pass a folder to write results into.")
        real.mkdir(parents=True, exist_ok=True)
        return real
