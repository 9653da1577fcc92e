"""Confinement of file access to the folders the user allowed.

An agent may have been talked into asking for ``~/.ssh/id_rsa`` or ``/dev/zero``; paths are resolved
(``~``, ``..``, symlinks) before the check, and only regular files are read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path


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


class Workspace:
    def __init__(self, allowed_dirs: Iterable[Path]) -> None:
        self.allowed_dirs = [Path(d).expanduser().resolve() for d in allowed_dirs]

    def with_roots(self, roots: Iterable[Path]) -> Workspace:
        """This workspace plus folders the MCP client offered as roots."""
        return Workspace([*self.allowed_dirs, *roots])

    def describe(self) -> str:
        return ", ".join(str(d) for d in self.allowed_dirs)

    def resolve(self, raw: str | os.PathLike[str], *, base: Path | None = None) -> Path:
        """The real path of ``raw`` (relative paths start at the first allowed folder), if it is allowed."""
        if not self.allowed_dirs:
            raise PathNotAllowed(NO_FOLDER_ALLOWED)
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = (base or self.allowed_dirs[0]) / path
        real = path.resolve()
        if not any(real == d or real.is_relative_to(d) for d in self.allowed_dirs):
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
