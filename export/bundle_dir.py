"""The bundle directory an export writes into: checked before any work, the new bundle staged
inside it and moved in last, and only an earlier bundle's own files ever removed."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from edge_embed.errors import EdgeEmbedError, InputError
from edge_embed.manifest import MANIFEST_NAME, read_manifest

STAGING_PREFIX = ".edge-embed-staging-"  # inside the bundle directory, so the final moves are renames
LOCK_NAME = ".edge-embed-lock"


def staging_prefix() -> str:
    """The staging folder's name starts with the exporting process's pid (see _export_running)."""
    return f"{STAGING_PREFIX}{os.getpid()}-"


def prepare_output(out: Path) -> bool:
    """Check and create the bundle directory before any work; clear staging folders that killed
    exports left there. Returns whether the directory was created here."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; name a directory for the bundle")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the bundle directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"the bundle directory {out} is not writable")
    for leftover in out.glob(STAGING_PREFIX + "*"):
        if not _export_running(leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)
    return created


def _export_running(staging_name: str) -> bool:
    """Whether the export that owns a staging folder (its pid is in the name) is still running."""
    pid = staging_name[len(STAGING_PREFIX):].split("-", 1)[0]
    if os.name != "posix" or not pid.isdigit():
        return True  # cannot tell (os.kill(pid, 0) would signal the process on Windows): keep it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _bundle_files(out: Path) -> set[str]:
    """The files an earlier bundle's manifest in `out` lists (none if there is no readable one)."""
    try:
        return set(read_manifest(out).files)
    except EdgeEmbedError:
        return set()


@contextlib.contextmanager
def install_lock(out: Path):
    """An exclusive lock on the bundle directory while files are moved in: two exports to the same
    --out at once install one after the other, so the directory holds one whole bundle (the
    later one), never one's models beside the other's manifest. Released when the process dies.
    POSIX locks the directory itself (no file left behind); elsewhere a lock file in it."""
    if os.name == "posix":
        import fcntl

        descriptor = os.open(out, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock
        return
    import msvcrt  # pragma: no cover - Windows

    with open(out / LOCK_NAME, "a+b") as handle:  # pragma: no cover
        while True:
            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)  # itself retries for 10 s
                break
            except OSError:
                continue
        yield


def install_bundle(staging: Path, out: Path, files: dict[str, str]) -> None:
    """Move the staged bundle into `out`, then remove the files of an earlier bundle there that
    this one does not list. Only files that bundle's manifest listed: `out` may hold anything else.
    The manifest moves last, so a reader never finds a new manifest before its files."""
    with install_lock(out):
        earlier = _bundle_files(out)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
            shutil.move(str(path), out / path.name)
        for name in sorted(earlier - set(files) - {MANIFEST_NAME, "validation.json"}):
            (out / name).unlink(missing_ok=True)
            print(f"[export] removed {name}, left by an earlier bundle in {out}", file=sys.stderr, flush=True)
