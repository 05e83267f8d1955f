"""Read a training set, a zip of one folder per person, into memory, refusing anything hostile.

The whole archive is checked from its central directory before any photo is read: caps on
sizes, entry count and compression ratio (zip bombs), entries whose bytes overlap
(overlapping-entry bombs, which the zipfile of Python 3.11.7 does not detect), unsafe
paths, symbolic links, encryption, unusual compression. Then every photo is read through
once without being kept, to find archives inside the archive and data that does not match
its header (inflating past or short of its declared size, bad CRC), so that an archive which
passes the checks reads to the end. Photos are then read into memory in bounded chunks;
nothing is ever written to disk.

Layout: ``Person/photo``, the folder name being the label. One folder wrapping all the
person folders (``train/Person/photo``, as when someone zips the ``train`` folder itself)
is unwrapped; photos at the root or further down are refused rather than given a guessed
label. A folder of person folders on disk is read by the same rules.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

from datastructure.errors import ArchiveNotValid, ArchiveTooLarge, DatasetNotValid
from datastructure.names import names_problems, person_name, shown

Source = str | os.PathLike[str] | BinaryIO

_CHUNK_BYTES = 1024**2
# The ratio cap is for entries big enough to matter: one under this size cannot inflate to
# much however well it compresses (and the total cap bounds them all together), while
# small honest files, such as a flat-colour BMP, can compress far beyond any sane ratio.
_RATIO_MIN_BYTES = 1024**2
_SUPPORTED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_ENCRYPTED_FLAG = 0x1
# Local file header: signature, 22 bytes we do not need, file name and extra field lengths.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_DRIVE_LETTER = re.compile(r"[A-Za-z]:")
_JUNK_FOLDER = "__MACOSX"
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})  # .DS_Store goes as a dot-file
_ARCHIVE_SUFFIXES = (".zip", ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".xz")
_ARCHIVE_MAGIC = (
    b"PK\x03\x04",  # zip
    b"PK\x05\x06",  # empty zip
    b"Rar!\x1a\x07",
    b"7z\xbc\xaf\x27\x1c",
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
)
_TAR_MAGIC_OFFSET, _TAR_MAGIC = 257, b"ustar"
_HEAD_BYTES = _TAR_MAGIC_OFFSET + len(_TAR_MAGIC)
# What zipfile and zlib raise on damaged bytes: broken structure, bad CRC, bad deflate
# data, data cut short, offsets that cannot be sought, names that cannot be decoded.
_DAMAGE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
)


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps that keep a hostile archive from exhausting memory or time."""

    max_archive_bytes: int = 2 * 1024**3
    """Total uncompressed bytes of the photos."""
    max_entry_bytes: int = 50 * 1024**2
    """Uncompressed bytes of one photo."""
    max_entries: int = 20_000
    """Entries in the archive, junk and folders included."""
    max_ratio: float = 100.0
    """Uncompressed / compressed size of one photo; photos compress about 1-2 times."""


_DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class Photo:
    """One photo of one person, read into memory; its content is not checked here."""

    person: str
    """The person folder's name in its normal form (NFC, trimmed: ``datastructure.names``), the label."""
    name: str
    """The path inside the archive or folder, e.g. "Ben Afflek/1.jpg"."""
    data: bytes


def list_photos(
    source: Source, limits: ArchiveLimits = _DEFAULT_LIMITS
) -> list[tuple[str, str, int]]:
    """Check the whole archive, then return (person, name, size) for each photo.

    Each photo is decompressed once, in bounded chunks that are not kept, so a damaged or
    lying entry is refused here (where a service can still answer 4xx) and not halfway
    through a training that reads the photos later.
    """
    with _opened_zip(source) as (archive, stream):
        return [
            (person, info.filename, info.file_size)
            for person, info in _checked_photos(archive, stream, limits)
        ]


def iter_photos(source: Source, limits: ArchiveLimits = _DEFAULT_LIMITS) -> Iterator[Photo]:
    """Check the whole archive as list_photos does, then yield its photos in archive order."""
    with _opened_zip(source) as (archive, stream):
        for person, info in _checked_photos(archive, stream, limits):
            yield Photo(person, info.filename, _entry_bytes(archive, info))


def iter_folder_photos(root: Path) -> Iterator[Photo]:
    """The same stream from a folder of person folders on disk, in name order.

    Junk is skipped and the layout checked as in an archive. A symbolic link is followed
    only within ``root``: a linked file is read, a linked folder is not walked (its target
    is walked where it is); a link leading out of ``root`` raises DatasetNotValid.
    """
    root = Path(root)
    names = _folder_photo_names(root)
    for person, name in zip(_people(names), names):
        yield Photo(person, name, (root / name).read_bytes())


def iter_person_photos(source: Source, limits: ArchiveLimits = _DEFAULT_LIMITS) -> Iterator[Photo]:
    """The photos of a zip of ONE person's photos (enrolment), checked as ``iter_photos``
    checks a training zip; they may sit at its root or in one folder. ``person`` is empty:
    the caller names the person."""
    with _opened_zip(source) as (archive, stream):
        photos = _checked_entries(archive, stream, limits)
        if not photos:
            raise DatasetNotValid("no photos found in the zip")
        deep = [info.filename for info in photos if info.filename.count("/") > 1]
        if deep:
            raise DatasetNotValid(f"photos must sit at the zip's root or in one folder; deeper: {_some(deep)}",
                                  data=deep)
        for info in photos:
            yield Photo("", info.filename, _entry_bytes(archive, info))


def photo_source(
    path: str | os.PathLike[str], limits: ArchiveLimits = _DEFAULT_LIMITS
) -> Iterator[Photo]:
    """The photos of a zip file or of a folder of person folders, whichever ``path`` is.

    ``limits`` bound zip files, whose bytes come from someone else; a folder is read as is.
    """
    path = Path(path)
    return iter_folder_photos(path) if path.is_dir() else iter_photos(path, limits)


def photo_count(path: str | os.PathLike[str], limits: ArchiveLimits = _DEFAULT_LIMITS) -> int:
    """How many photos photo_source will yield, after the same checks (for progress bars)."""
    path = Path(path)
    if path.is_dir():
        return len(_people(_folder_photo_names(path)))
    return len(list_photos(path, limits))


def limits_from(section: Any) -> ArchiveLimits:
    """ArchiveLimits from the config's ``limits`` section; fields it does not name keep their default."""
    names = [field.name for field in fields(ArchiveLimits)]
    return ArchiveLimits(**{name: getattr(section, name) for name in names if hasattr(section, name)})


@contextlib.contextmanager
def _opened_zip(source: Source) -> Iterator[tuple[zipfile.ZipFile, BinaryIO]]:
    """The archive at ``source``, with the stream it reads from (to inspect local headers)."""
    with contextlib.ExitStack() as stack:
        stream = source if hasattr(source, "read") else stack.enter_context(open(source, "rb"))
        with _damage_reported_as("the file is not a readable zip archive"):
            archive = stack.enter_context(zipfile.ZipFile(stream))
        with _damage_reported_as("the archive is damaged"):
            yield archive, stream


@contextlib.contextmanager
def _damage_reported_as(description: str) -> Iterator[None]:
    try:
        yield
    except _DAMAGE_ERRORS as exc:
        raise ArchiveNotValid(f"{description}: {exc}") from exc


def _checked_photos(
    archive: zipfile.ZipFile, stream: BinaryIO, limits: ArchiveLimits
) -> list[tuple[str, zipfile.ZipInfo]]:
    """(person, entry) for each photo, once every check has passed; reads heads only."""
    photos = _checked_entries(archive, stream, limits)
    people = _people([info.filename for info in photos])
    return list(zip(people, photos))


def _checked_entries(
    archive: zipfile.ZipFile, stream: BinaryIO, limits: ArchiveLimits
) -> list[zipfile.ZipInfo]:
    """The photo entries, once every check but the layout has passed; reads heads only."""
    entries = archive.infolist()
    _check_entry_count(entries, limits)
    _check_no_overlap(entries, stream, archive.start_dir)
    photos = [info for info in entries if _is_photo(info)]
    _check_unique_names(photos)
    for info in photos:
        _check_photo_entry(info, limits)
    _check_total_size(photos, limits)
    for info in photos:
        _check_entry_data(archive, info)
    return photos


def _check_entry_count(entries: Sequence[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    if len(entries) > limits.max_entries:
        raise ArchiveTooLarge(
            f"the archive has {len(entries):,} entries; the limit is {limits.max_entries:,}"
        )


def _check_no_overlap(
    entries: Sequence[zipfile.ZipInfo], stream: BinaryIO, directory_start: int
) -> None:
    """Refuse entries sharing bytes, the trick of overlapping-entry zip bombs.

    CPython's zipfile checks this itself only in releases from 2024 on (gh-109858), which
    the Python 3.11.7 this project runs on predates.
    """
    spans = sorted(_stored_span(info, stream) for info in entries)
    boundaries = [start for start, _, _ in spans[1:]] + [directory_start]
    for (_, end, name), boundary in zip(spans, boundaries):
        if end > boundary:
            raise ArchiveNotValid(
                f"entry {name!r} overlaps the entry or central directory after it"
            )


def _stored_span(info: zipfile.ZipInfo, stream: BinaryIO) -> tuple[int, int, str]:
    """(start, end, name) of the entry's local header and compressed data in the file."""
    # A data descriptor may follow the data; like CPython's own check, this ignores it,
    # since it holds no data that could be decompressed.
    stream.seek(info.header_offset)
    header = stream.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size:
        raise ArchiveNotValid(f"entry {info.filename!r} starts past the end of the file")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != _LOCAL_HEADER_SIGNATURE:
        raise ArchiveNotValid(f"entry {info.filename!r} has no local header where listed")
    data_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    return info.header_offset, data_start + info.compress_size, info.filename


def _is_photo(info: zipfile.ZipInfo) -> bool:
    """Whether the entry is a photo to read: False for folders and junk, raises if unsafe."""
    problem = _path_problem(info.orig_filename)
    if problem:
        raise ArchiveNotValid(f"entry {info.orig_filename!r} {problem}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveNotValid(f"entry {info.filename!r} is a symbolic link")
    return not info.is_dir() and not _is_junk(info.filename.split("/"))


def _path_problem(name: str) -> str | None:
    """Why ``name`` is not a plain relative path, or None when it is one."""
    if "\0" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE_LETTER.match(name):
        return "starts with a drive letter"
    parts = name.removesuffix("/").split("/")
    if ".." in parts:
        return "climbs out of its folder with '..'"
    if "" in parts or "." in parts:
        return "has an empty or '.' path segment"
    return None


def _is_junk(parts: Sequence[str]) -> bool:
    """Whether a path, split into parts, is operating-system litter rather than a photo."""
    return (
        parts[0] == _JUNK_FOLDER
        or any(part.startswith(".") for part in parts)
        or parts[-1].lower() in _JUNK_FILES
    )


def _check_unique_names(photos: Sequence[zipfile.ZipInfo]) -> None:
    # Names that differ only by case or Unicode normalisation land on the same file on
    # many systems, so which one "wins" would depend on where the archive is opened.
    seen: dict[str, str] = {}
    for info in photos:
        key = _caseless(info.filename)
        if key in seen:
            raise ArchiveNotValid(
                f"entries {seen[key]!r} and {info.filename!r} have the same name "
                "once case and Unicode normalisation are ignored"
            )
        seen[key] = info.filename


def _caseless(name: str) -> str:
    """The canonical caseless form of ``name``, as the Unicode standard defines it."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def _check_photo_entry(info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    name = info.filename
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise ArchiveNotValid(f"entry {name!r} is encrypted")
    if info.compress_type not in _SUPPORTED_METHODS:
        raise ArchiveNotValid(
            f"entry {name!r} uses compression method {info.compress_type}; "
            "only stored (0) and deflated (8) are accepted"
        )
    if name.lower().endswith(_ARCHIVE_SUFFIXES):
        raise ArchiveNotValid(f"entry {name!r} is an archive inside the archive")
    if info.file_size > limits.max_entry_bytes:
        raise ArchiveTooLarge(
            f"entry {name!r} is {info.file_size:,} bytes uncompressed; "
            f"the limit is {limits.max_entry_bytes:,}"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= _RATIO_MIN_BYTES and ratio > limits.max_ratio:
        raise ArchiveTooLarge(
            f"entry {name!r} inflates {ratio:,.0f} times; the limit is {limits.max_ratio:g}"
        )


def _check_total_size(photos: Sequence[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    total = sum(info.file_size for info in photos)
    if total > limits.max_archive_bytes:
        raise ArchiveTooLarge(
            f"the photos add up to {total:,} bytes uncompressed; "
            f"the limit is {limits.max_archive_bytes:,}"
        )


def _people(names: Sequence[str]) -> list[str]:
    """The person, i.e. the label, of each photo path; raises for photos out of place."""
    if not names:
        raise DatasetNotValid(
            "no photos found; expected one folder per person, e.g. 'Ben Afflek/1.jpg'"
        )
    paths = [name.split("/") for name in names]
    if _has_wrapper_folder(paths):
        paths = [path[1:] for path in paths]
    at_root = [name for name, path in zip(names, paths) if len(path) == 1]
    if at_root:
        raise DatasetNotValid(
            f"photos must be inside a folder named after the person; "
            f"not in one: {_some(at_root)}",
            data=at_root,
        )
    too_deep = [name for name, path in zip(names, paths) if len(path) > 2]
    if too_deep:
        raise DatasetNotValid(
            f"photos must sit directly in their person's folder; deeper: {_some(too_deep)}",
            data=too_deep,
        )
    refused = names_problems(path[0] for path in paths)
    if refused:
        reasons = {shown(raw): problems for raw, problems in refused.items()}
        listed = "; ".join(f"{name!r}: {', '.join(problems)}" for name, problems in list(reasons.items())[:5])
        raise DatasetNotValid(f"these folder names cannot name a person: {listed}", data={"names": reasons})
    return [person_name(path[0]) for path in paths]


def _has_wrapper_folder(paths: Sequence[Sequence[str]]) -> bool:
    """Whether one top folder holds all the person folders (``train/Person/photo``)."""
    return len({path[0] for path in paths}) == 1 and all(len(path) >= 3 for path in paths)


def _some(names: Sequence[str], shown: int = 5) -> str:
    listed = ", ".join(repr(name) for name in names[:shown])
    hidden = len(names) - shown
    return f"{listed} and {hidden} more" if hidden > 0 else listed


def _check_entry_data(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read the entry through, keeping only its head: no archive inside, data as declared."""
    with archive.open(info) as entry:
        head = entry.read(_HEAD_BYTES)
        # Names lie, so the first bytes decide too: a nested archive would dodge every cap here.
        if head.startswith(_ARCHIVE_MAGIC) or head[_TAR_MAGIC_OFFSET:] == _TAR_MAGIC:
            raise ArchiveNotValid(f"entry {info.filename!r} is an archive inside the archive")
        size = len(head)
        # zipfile checks the CRC once the declared size is reached (an entry inflating past it
        # fails there); an entry ending early is caught by counting.
        while chunk := entry.read(_CHUNK_BYTES):
            size += len(chunk)
            _check_not_past_declared_size(info, size)
    _check_not_short_of_declared_size(info, size)


def _check_not_past_declared_size(info: zipfile.ZipInfo, size: int) -> None:
    # zipfile stops at the declared size itself; counting keeps the promise should it ever
    # not. The declared size was already held to max_entry_bytes.
    if size > info.file_size:
        raise ArchiveNotValid(
            f"entry {info.filename!r} inflates past its declared {info.file_size:,} bytes"
        )


def _check_not_short_of_declared_size(info: zipfile.ZipInfo, size: int) -> None:
    if size < info.file_size:
        raise ArchiveNotValid(
            f"entry {info.filename!r} holds {size:,} of its declared {info.file_size:,} bytes"
        )


def _entry_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The entry's data, read in bounded chunks and never past its declared size."""
    chunks, size = [], 0
    with archive.open(info) as entry:
        while chunk := entry.read(_CHUNK_BYTES):
            size += len(chunk)
            _check_not_past_declared_size(info, size)
            chunks.append(chunk)
    _check_not_short_of_declared_size(info, size)
    return b"".join(chunks)


def _folder_photo_names(root: Path) -> list[str]:
    """Paths, relative to ``root`` and with '/', of the files to read as photos, sorted."""
    real_root = Path(os.path.realpath(root))
    names = []
    for folder, dirnames, filenames in os.walk(root, onerror=_raise):
        relative = Path(folder).relative_to(root)
        dirnames[:] = [name for name in dirnames if not _is_junk((relative / name).parts)]
        filenames = [name for name in filenames if not _is_junk((relative / name).parts)]
        for name in dirnames + filenames:
            _check_link_stays_inside(Path(folder, name), real_root)
        for name in filenames:
            _check_regular_file(Path(folder, name))
        names += [(relative / name).as_posix() for name in filenames]
    return sorted(names)


def _raise(error: OSError) -> None:
    # os.walk skips folders it cannot read unless told otherwise; a photo must not vanish.
    raise error


def _check_link_stays_inside(path: Path, real_root: Path) -> None:
    # realpath, not Path.resolve: on Python 3.11 the latter raises on symlink loops.
    if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(real_root):
        raise DatasetNotValid(f"{str(path)!r} is a symbolic link out of {str(real_root)!r}")


def _check_regular_file(path: Path) -> None:
    # Reading a FIFO or device would block or never end.
    if not path.is_file():
        raise DatasetNotValid(f"{str(path)!r} is not a regular file")
