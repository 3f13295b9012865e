"""Where signed checkpoints go outside the database, so that a database rolled back, truncated or rewritten is
caught against the newest checkpoint exported before (issue #5; the same reason Certificate Transparency logs
hand their signed tree heads to others, RFC 9162 §8.1.4).

Two sinks:

- `DirectorySink` — an append-only folder: `<tree size, 20 digits>.note` per checkpoint, written once (a new
  file is published with a hard link, which fails rather than replaces), and `latest.note`, the newest one. In
  production the folder should live on storage the database's operators cannot rewrite (another host, a WORM
  bucket synchronised from it, a write-once mount).
- `HttpsSink` — `POST <url>` with the note as `text/plain; charset=utf-8`, answered 2xx once stored;
  `GET <url>` returns the newest note stored (404 when none). TLS is verified (with a private CA file if given).

A sink refuses a note for a tree size that already holds a different note: two different signed trees of one
size are a fork, the very thing the log exists to make impossible.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

__all__ = ["CheckpointSink", "DirectorySink", "HttpsSink", "SinkConflict", "SinkError", "open_sink"]

_NOTE_TYPE = "text/plain; charset=utf-8"


class SinkError(Exception):
    """The sink could not be reached or did not store the checkpoint."""


class SinkConflict(SinkError):
    """The sink already holds a different checkpoint of this tree size: the log has forked."""


class CheckpointSink(Protocol):
    def publish(self, size: int, note: str) -> None: ...

    def latest(self) -> str | None: ...

    def describe(self) -> str: ...


class DirectorySink:
    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"directory {self.path.name}/"

    def publish(self, size: int, note: str) -> None:
        data = note.encode("utf-8")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            name = self.path / f"{size:020d}.note"
            if not _write_once(self.path, name, data) and name.read_bytes() != data:
                raise SinkConflict(f"the sink already holds a different checkpoint of size {size}")
            if self._latest_size() <= size:
                _replace(self.path, self.path / "latest.note", data)
        except OSError as error:
            raise SinkError(f"could not write the checkpoint to {self.describe()}: {error.strerror}") from None

    def latest(self) -> str | None:
        try:
            return (self.path / "latest.note").read_text("utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SinkError(f"could not read {self.describe()}: {error.strerror}") from None

    def _latest_size(self) -> int:
        # The size is the second line of the checkpoint (C2SP tlog-checkpoint); a sink that has none yet is at -1.
        text = self.latest()
        if text is None:
            return -1
        lines = text.split("\n")
        return int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else -1


class HttpsSink:
    def __init__(self, url: str, *, ca_file: str | None = None, timeout: float = 5.0) -> None:
        if not url.startswith("https://"):
            raise ValueError("the checkpoint sink URL must be https")
        self.url = url
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file)

    def describe(self) -> str:
        return self.url

    def publish(self, size: int, note: str) -> None:
        # The URL was checked to be https in __init__ (S310/B310: no file: or custom schemes reach urlopen).
        request = urllib.request.Request(  # noqa: S310  # nosec B310  # https only, checked in __init__
            self.url, data=note.encode("utf-8"), method="POST", headers={"Content-Type": _NOTE_TYPE}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as response:  # noqa: S310  # nosec B310
                response.read()
        except urllib.error.HTTPError as error:
            if error.code == 409:
                raise SinkConflict(f"the sink already holds a different checkpoint of size {size}") from None
            raise SinkError(f"the checkpoint sink answered {error.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            raise SinkError(f"could not reach the checkpoint sink: {error}") from None

    def latest(self) -> str | None:
        try:
            # https only, checked in __init__ (S310/B310)
            with urllib.request.urlopen(self.url, timeout=self.timeout, context=self._context) as response:  # noqa: S310  # nosec B310
                return bytes(response.read()).decode("utf-8")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise SinkError(f"the checkpoint sink answered {error.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError, UnicodeDecodeError) as error:
            raise SinkError(f"could not read the checkpoint sink: {error}") from None


def open_sink(target: str, *, instance_path: Path, ca_file: str | None = None) -> CheckpointSink:
    """An https URL is an `HttpsSink`; anything else a folder (relative to the instance folder)."""
    if target.startswith("https://"):
        return HttpsSink(target, ca_file=ca_file)
    if "://" in target:
        raise ValueError("the checkpoint sink must be a folder or an https URL")
    path = Path(target)
    return DirectorySink(path if path.is_absolute() else instance_path / path)


def _write_once(folder: Path, name: Path, data: bytes) -> bool:
    """Write `name` durably unless it exists; True if this call created it."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(tmp, name)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(folder)
    return True


def _replace(folder: Path, name: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    if os.name == "posix":
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
