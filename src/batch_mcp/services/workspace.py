"""Confinement of file access to the folders the user allowed, and the one way the server writes a file.

An agent may have been talked into asking for ``~/.ssh/id_rsa`` or ``/dev/zero``; paths are resolved
(``~``, ``..``, symlinks) before the check, and only regular files are read. Every file the server
writes goes through :class:`NewFile`, so none is ever written through a link someone planted, nor
replaces a file unasked. An MCP client's roots can only narrow the allowed folders, never add to them.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

#: Names of what this server creates for a while (partial files, scratch folders) end with the creator's pid.
_OWNER_TAG = ".batch-mcp-"
_PARTIAL_NAME = re.compile(r"\..+" + re.escape(_OWNER_TAG) + r"(\d+)\.part")
#: A partial file nobody wrote to for this long belongs to no running write, even if its pid runs again.
STALE_PARTIAL_S = 24 * 3600
#: Names of the partial files and scratch folders this process is using right now; the lock makes creating
#: and registering one a single step, so that a sweep in another thread never sees it unregistered.
_IN_USE: set[str] = set()
_REGISTRY = threading.Lock()
#: What os.link answers on a file system without hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP})


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class PathNotAllowed(Exception):
    """The path is outside the allowed folders, or is not the kind of file the tool needs."""


class OutputTaken(PathNotAllowed):
    """The output path holds a link, something other than a file, or a file that may not be replaced."""
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

    def output_file(self, raw: str | os.PathLike[str]) -> Path:
        """Where to write ``raw``: its folder resolved and allowed, its name kept as given, so that a link
        under that name is noticed rather than followed."""
        path = as_path(raw)
        if path.name in ("", ".", ".."):
            raise PathNotAllowed(f"'{raw}' is not a file name; pass the path of the file to write.")
        folder = self.resolve(path.parent)
        if not folder.is_dir():
            raise PathNotAllowed(f"The folder of '{raw}' ({folder}) does not exist; create it or pick another path.")
        return folder / path.name

    def output_dir(self, raw: str | os.PathLike[str] | None, default: Path) -> Path:
        """An allowed folder to write into, created if missing."""
        real = self.resolve(raw) if raw else self.resolve(default)
        if real.exists() and not real.is_dir():
            raise PathNotAllowed(f"'{raw}' exists and is not a folder; pass a folder to write results into.")
        real.mkdir(parents=True, exist_ok=True)
        return real


def refuse_link(path: Path) -> None:
    """Raise unless ``path`` is absent or a regular file: a link is never written through nor replaced."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise OutputTaken(f"{path} is a symbolic link; the server never writes through or replaces a link. "
                          "Remove the link, or choose another output.")
    if not stat.S_ISREG(mode):
        raise OutputTaken(f"{path} exists and is not a regular file; choose another output.")


class NewFile:
    """Write ``target`` through a hidden partial file beside it, moved into place only once complete.

    The partial file is created exclusively (never through a planted file or link) and named after
    this process, so one a killed process left behind is recognised and removed by the next write
    into its folder. The target is never a link followed or replaced; an existing file is replaced
    only with ``overwrite``, and one already holding exactly the same bytes is left as it is. Leaving
    the block with an exception, or after :meth:`discard`, leaves the folder as it was.
    """

    def __init__(self, target: Path, *, overwrite: bool = False, text: bool = False,
                 if_taken: str = "pass overwrite=true to replace it, or choose another output") -> None:
        self.target, self.overwrite, self.text, self.if_taken = target, overwrite, text, if_taken
        self.keep = True

    def __enter__(self) -> NewFile:
        refuse_link(self.target)
        remove_stale_partials(self.target.parent)
        with _REGISTRY:
            handle, name = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.",
                                            suffix=f"{_OWNER_TAG}{os.getpid()}.part")
            self.partial = Path(name)
            _IN_USE.add(self.partial.name)
        self.out: IO[Any] = (os.fdopen(handle, "w", encoding="utf-8", newline="") if self.text
                             else os.fdopen(handle, "wb"))
        return self

    def discard(self) -> None:
        """Put nothing in place when the block ends."""
        self.keep = False

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            self.out.close()
            if kind is None and self.keep:
                self._put_in_place()
        finally:
            self.partial.unlink(missing_ok=True)
            _IN_USE.discard(self.partial.name)

    def _put_in_place(self) -> None:
        refuse_link(self.target)  # again: one may have been planted while the file was written
        if self.overwrite:
            os.replace(self.partial, self.target)  # renames over a file; a link planted since is replaced, not followed
            return
        try:
            _link_exclusively(self.partial, self.target)
        except FileExistsError:
            refuse_link(self.target)
            if not filecmp.cmp(self.partial, self.target, shallow=False):
                raise OutputTaken(f"{self.target} already exists; {self.if_taken}.") from None


def _link_exclusively(partial: Path, target: Path) -> None:
    """Give ``partial`` the name ``target`` unless something (even a dangling link) holds it already."""
    try:
        os.link(partial, target)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # no hard links here: claim the name exclusively, then rename over the claim
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)))
        os.replace(partial, target)


def remove_stale_partials(folder: Path) -> None:
    """Delete the partial files a killed or crashed write of ours left in ``folder``."""
    now = time.time()
    with _REGISTRY, os.scandir(folder) as entries:
        for entry in entries:
            owner = _PARTIAL_NAME.fullmatch(entry.name)
            if owner is None or entry.name in _IN_USE:
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and (_left_behind(int(owner[1])) or now - info.st_mtime > STALE_PARTIAL_S):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _left_behind(pid: int) -> bool:
    """Whether something named after process ``pid`` (and not in use here) can no longer be in use."""
    if pid == os.getpid():
        return True  # not in use by this process, so left by an earlier one that had the same pid
    if os.name == "nt":
        return False  # os.kill would end the process there, not probe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # runs, as another user
    return False
