"""utils.archive: every check on uploaded zips and photo folders, on hand-built hostile files."""

import contextlib
import gzip
import io
import os
import stat
import unicodedata
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastructure.errors import (
    ArchiveNotValid,
    ArchiveTooLarge,
    DatasetNotValid,
    PyRecognizerError,
)
from utils.archive import (
    ArchiveLimits,
    Photo,
    iter_folder_photos,
    iter_photos,
    limits_from,
    list_photos,
    photo_count,
    photo_source,
)


from tests.hostile import (
    CENTRAL_FLAGS,
    CENTRAL_HEADER_OFFSET,
    CENTRAL_COMPRESSED,
    CENTRAL_SIZE,
    LOCAL_FLAGS,
    LOCAL_SIZE,
    MiB,
    PHOTO,
    central_offsets,
    jpeg,
    local_offsets,
    mutated,
    named,
    patched,
    photos,
    tar_of_photo,
    time_limit,
    two_entries,
    archive_of,
)


@pytest.fixture
def on_disk(tmp_path):
    """Write zip bytes to a file in tmp_path and return its path."""

    def write(data: bytes, name: str = "upload.zip") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


# --- what a good archive gives ---------------------------------------------------------


def test_photos_are_listed_and_read_with_their_person(on_disk):
    path = on_disk(photos("Ben Afflek/1.jpg", "Ben Afflek/2.jpg", "Madonna/00000005.jpg?ssl=1"))
    assert list_photos(path) == [
        ("Ben Afflek", "Ben Afflek/1.jpg", len(jpeg(0))),
        ("Ben Afflek", "Ben Afflek/2.jpg", len(jpeg(1))),
        ("Madonna", "Madonna/00000005.jpg?ssl=1", len(jpeg(2))),
    ]
    assert list(iter_photos(path)) == [
        Photo("Ben Afflek", "Ben Afflek/1.jpg", jpeg(0)),
        Photo("Ben Afflek", "Ben Afflek/2.jpg", jpeg(1)),
        Photo("Madonna", "Madonna/00000005.jpg?ssl=1", jpeg(2)),
    ]


def test_a_stored_archive_reads_the_same():
    data = archive_of(("Ben/1.jpg", PHOTO), compression=zipfile.ZIP_STORED)
    assert [photo.data for photo in iter_photos(io.BytesIO(data))] == [PHOTO]


def test_content_not_extension_decides_later():
    names = ["Ben/1.JPG", "Ben/2.png", "Ben/3", "Ben/notes.txt"]
    assert [name for _, name, _ in list_photos(io.BytesIO(photos(*names)))] == names


def test_a_file_object_is_read_and_left_open():
    upload = io.BytesIO(photos("Ben/1.jpg"))
    assert [photo.person for photo in iter_photos(upload)] == ["Ben"]
    assert not upload.closed


def test_one_folder_wrapping_the_people_is_unwrapped(on_disk):
    path = on_disk(photos("train/Ben Afflek/1.jpg", "train/Madonna/1.jpg", "train/.DS_Store"))
    assert [(person, name) for person, name, _ in list_photos(path)] == [
        ("Ben Afflek", "train/Ben Afflek/1.jpg"),
        ("Madonna", "train/Madonna/1.jpg"),
    ]


def test_a_single_person_archive_needs_no_wrapper():
    assert [person for person, _, _ in list_photos(io.BytesIO(photos("Ben/1.jpg")))] == ["Ben"]


def test_junk_is_skipped_silently():
    data = archive_of(
        ("Ben/", b""),
        ("Ben/1.jpg", PHOTO),
        ("Ben/.DS_Store", b"\0\0\0\1Bud1"),
        ("Ben/desktop.ini", b"[.ShellClassInfo]"),
        ("Ben/Thumbs.db", b"\xd0\xcf\x11\xe0"),
        (".hidden/secret.jpg", PHOTO),
        ("Thumbs.db", b"\xd0\xcf\x11\xe0"),
        ("__MACOSX/", b""),
        ("__MACOSX/Ben/._1.jpg", b"\0\5\26\7"),
    )
    assert [name for _, name, _ in list_photos(io.BytesIO(data))] == ["Ben/1.jpg"]


def test_nothing_is_written_to_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "upload.zip"
    archive.write_bytes(photos("Ben/1.jpg", "Madonna/1.jpg"))
    assert len(list(iter_photos(archive))) == 2
    assert list(tmp_path.iterdir()) == [archive]


# --- layout ----------------------------------------------------------------------------


def test_photos_at_the_root_are_named():
    with pytest.raises(DatasetNotValid, match="'1.jpg'") as raised:
        list_photos(io.BytesIO(photos("1.jpg", "2.jpg", "Ben/1.jpg")))
    assert raised.value.data == ["1.jpg", "2.jpg"]


def test_deeper_folders_are_refused():
    with pytest.raises(DatasetNotValid, match="deeper") as raised:
        list_photos(io.BytesIO(photos("Ben/2019/1.jpg", "Madonna/1.jpg")))
    assert raised.value.data == ["Ben/2019/1.jpg"]


def test_too_deep_even_after_unwrapping():
    with pytest.raises(DatasetNotValid):
        list_photos(io.BytesIO(photos("train/Ben/2019/1.jpg", "train/Madonna/1.jpg")))


@pytest.mark.parametrize(
    "data",
    [archive_of(), archive_of(("Ben/", b"")), archive_of(("__MACOSX/._x", b"x"), (".DS_Store", b"x"))],
    ids=["empty", "folders only", "junk only"],
)
def test_an_archive_without_photos_is_refused(data):
    with pytest.raises(DatasetNotValid, match="no photos"):
        list_photos(io.BytesIO(data))


# --- broken archives -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", os.urandom(4096), b"PK\x03\x04" + os.urandom(200), photos("Ben/1.jpg")[:300]],
    ids=["empty", "random", "zip magic then noise", "cut in half"],
)
def test_what_is_not_a_zip_is_refused(on_disk, data):
    with pytest.raises(ArchiveNotValid):
        list_photos(on_disk(data))


def test_a_truncated_archive_is_refused(on_disk):
    data = photos("Ben/1.jpg", "Madonna/1.jpg")
    with pytest.raises(ArchiveNotValid):
        list(iter_photos(on_disk(data[: len(data) // 2])))


def test_a_bad_crc_is_refused():
    data = archive_of(("Ben/1.jpg", PHOTO), compression=zipfile.ZIP_STORED)
    start = local_offsets(data)[0] + 30 + len("Ben/1.jpg")
    damaged = patched(data, (start + 100, "B", data[start + 100] ^ 0xFF))
    with pytest.raises(ArchiveNotValid, match="CRC"):
        list(iter_photos(io.BytesIO(damaged)))


def test_an_entry_inflating_past_its_declared_size_is_refused():
    data = archive_of(("Ben/1.jpg", b"A" * 100_000))
    lie = 1000
    (central,), (local,) = central_offsets(data), local_offsets(data)
    lying = patched(data, (central + CENTRAL_SIZE, "<I", lie), (local + LOCAL_SIZE, "<I", lie))
    with pytest.raises(ArchiveNotValid, match="'Ben/1.jpg'"):
        list(iter_photos(io.BytesIO(lying)))


def test_nothing_is_yielded_before_the_whole_archive_passed():
    photos_then_bomb = archive_of(("Ben/1.jpg", PHOTO), ("Ben/2.jpg", b"\0" * (2 * MiB)))
    stream = iter_photos(io.BytesIO(photos_then_bomb))
    with pytest.raises(ArchiveTooLarge):
        next(stream)


# --- zip bombs -------------------------------------------------------------------------


def test_too_many_entries():
    with pytest.raises(ArchiveTooLarge, match="4 entries"):
        list_photos(io.BytesIO(photos("A/1", "A/2", "A/3", "A/4")), ArchiveLimits(max_entries=3))


def test_an_entry_over_the_entry_cap():
    limits = ArchiveLimits(max_entry_bytes=len(PHOTO) - 1)
    with pytest.raises(ArchiveTooLarge, match="'Ben/1.jpg'"):
        list_photos(io.BytesIO(archive_of(("Ben/1.jpg", PHOTO))), limits)


def test_photos_over_the_total_cap():
    limits = ArchiveLimits(max_archive_bytes=2 * len(PHOTO) - 1)
    with pytest.raises(ArchiveTooLarge, match="add up"):
        list_photos(io.BytesIO(archive_of(("A/1", PHOTO), ("A/2", PHOTO))), limits)


def test_a_highly_compressed_entry_is_a_bomb():
    with pytest.raises(ArchiveTooLarge, match="inflates"):
        list_photos(io.BytesIO(archive_of(("Ben/1.jpg", b"\0" * (2 * MiB)))))


def test_small_entries_may_compress_well():
    # A flat-colour BMP under a mebibyte can compress a thousandfold and still be harmless.
    data = archive_of(("Ben/1.bmp", b"\0" * (MiB - 1)), ("Ben/2.jpg", PHOTO))
    assert len(list_photos(io.BytesIO(data))) == 2


def test_the_ratio_cap_is_configurable():
    data = archive_of(("Ben/1.jpg", b"\0" * (2 * MiB)))
    assert list_photos(io.BytesIO(data), ArchiveLimits(max_ratio=10_000))


@pytest.mark.parametrize(
    "edit",
    [
        # The classic overlapping bomb: every entry points at the same compressed data.
        lambda data: [(central_offsets(data)[1] + CENTRAL_HEADER_OFFSET, "<I", 0)],
        # The first entry's data runs on into the second entry's header.
        lambda data: [(central_offsets(data)[0] + CENTRAL_COMPRESSED, "<I", len(PHOTO) + 40)],
        # The last entry's data runs on into the central directory.
        lambda data: [(central_offsets(data)[1] + CENTRAL_COMPRESSED, "<I", len(PHOTO) + 40)],
    ],
    ids=["same offset", "into next entry", "into central directory"],
)
def test_overlapping_entries_are_refused(edit):
    data = two_entries()
    with pytest.raises(ArchiveNotValid, match="overlaps"):
        list_photos(io.BytesIO(patched(data, *edit(data))))


def test_an_entry_pointing_past_the_end_is_refused():
    data = two_entries()
    bad = patched(data, (central_offsets(data)[1] + CENTRAL_HEADER_OFFSET, "<I", len(data) + 10))
    with pytest.raises(ArchiveNotValid):
        list_photos(io.BytesIO(bad))


def test_an_entry_pointing_at_no_local_header_is_refused():
    data = two_entries()
    bad = patched(data, (central_offsets(data)[1] + CENTRAL_HEADER_OFFSET, "<I", 10))
    with pytest.raises(ArchiveNotValid, match="no local header"):
        list_photos(io.BytesIO(bad))


# --- hostile entries -------------------------------------------------------------------


def test_an_encrypted_entry_is_refused():
    data = archive_of(("Ben/1.jpg", PHOTO))
    (central,), (local,) = central_offsets(data), local_offsets(data)
    encrypted = patched(data, (central + CENTRAL_FLAGS, "<H", 1), (local + LOCAL_FLAGS, "<H", 1))
    with pytest.raises(ArchiveNotValid, match="encrypted"):
        list_photos(io.BytesIO(encrypted))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_other_compression_methods_are_refused(method):
    with pytest.raises(ArchiveNotValid, match=f"method {method}"):
        list_photos(io.BytesIO(archive_of(("Ben/1.jpg", PHOTO), compression=method)))


@pytest.mark.parametrize("name", ["Ben/more.zip", "Ben/more.tar.gz", "Ben/x.RAR", "Ben/x.7z"])
def test_an_archive_inside_is_refused_by_name(name):
    with pytest.raises(ArchiveNotValid, match="archive inside"):
        list_photos(io.BytesIO(archive_of((name, PHOTO))))


@pytest.mark.parametrize(
    "content",
    [
        archive_of(("Ben/1.jpg", PHOTO)),
        archive_of(),
        gzip.compress(PHOTO),
        tar_of_photo(),
        b"Rar!\x1a\x07\x01\x00" + PHOTO,
        b"7z\xbc\xaf\x27\x1c" + PHOTO,
    ],
    ids=["zip", "empty zip", "gzip", "tar", "rar", "7z"],
)
def test_an_archive_inside_is_refused_by_content(content):
    with pytest.raises(ArchiveNotValid, match="archive inside"):
        list_photos(io.BytesIO(archive_of(("Ben/1.jpg", PHOTO), ("Ben/2.jpg", content))))


@pytest.mark.parametrize(
    "name",
    [
        "../evil.jpg",
        "Ben/../../evil.jpg",
        "__MACOSX/../../evil.jpg",
        "/etc/cron.d/evil",
        "C:/Windows/evil.jpg",
        "c:evil.jpg",
        "Ben\\..\\..\\evil.jpg",
        "Ben/1.jpg\0.exe",
        "Ben//1.jpg",
        "./Ben/1.jpg",
        "Ben/./1.jpg",
    ],
)
def test_unsafe_paths_are_refused_not_rewritten(name):
    with pytest.raises(ArchiveNotValid):
        list_photos(io.BytesIO(archive_of(("Ben/0.jpg", PHOTO), (named(name), PHOTO))))


def test_a_symbolic_link_is_refused():
    link = zipfile.ZipInfo("Ben/1.jpg")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(ArchiveNotValid, match="symbolic link"):
        list_photos(io.BytesIO(archive_of(("Ben/0.jpg", PHOTO), (link, b"/etc/passwd"))))


@pytest.mark.parametrize(
    "first, second",
    [
        ("Ben/1.jpg", "Ben/1.jpg"),
        ("Ben/1.jpg", "BEN/1.JPG"),
        (unicodedata.normalize("NFC", "Zoë/1.jpg"), unicodedata.normalize("NFD", "Zoë/1.jpg")),
    ],
    ids=["same", "case", "unicode"],
)
def test_duplicate_names_are_refused(first, second):
    with pytest.warns(UserWarning) if first == second else contextlib.nullcontext():
        data = archive_of((first, PHOTO), (second, jpeg(1)))
    with pytest.raises(ArchiveNotValid, match="same name"):
        list_photos(io.BytesIO(data))


def test_spaces_and_unicode_labels_are_kept_as_written():
    data = photos("Ben Afflek/1.jpg", "Zoë Saldaña/1.jpg")
    assert [person for person, _, _ in list_photos(io.BytesIO(data))] == [
        "Ben Afflek",
        "Zoë Saldaña",
    ]


# --- folders on disk, and the one door -------------------------------------------------


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_a_folder_reads_like_an_archive(tmp_path):
    root = write_tree(tmp_path / "train", {
        "Ben Afflek/1.jpg": jpeg(0),
        "Madonna/1.jpg": jpeg(1),
        "Madonna/.DS_Store": b"x",
        "Madonna/Thumbs.db": b"x",
        "__MACOSX/Madonna/._1.jpg": b"x",
        ".git/HEAD": b"ref: refs/heads/main",
    })
    assert list(iter_folder_photos(root)) == [
        Photo("Ben Afflek", "Ben Afflek/1.jpg", jpeg(0)),
        Photo("Madonna", "Madonna/1.jpg", jpeg(1)),
    ]


def test_a_folder_follows_the_same_layout_rules(tmp_path):
    root = write_tree(tmp_path / "data", {"train/Ben/1.jpg": PHOTO, "train/Madonna/1.jpg": PHOTO})
    assert [photo.person for photo in iter_folder_photos(root)] == ["Ben", "Madonna"]
    write_tree(root, {"stray.jpg": PHOTO})
    with pytest.raises(DatasetNotValid):
        list(iter_folder_photos(root))


def test_a_folder_without_photos_is_refused(tmp_path):
    with pytest.raises(DatasetNotValid, match="no photos"):
        list(iter_folder_photos(write_tree(tmp_path, {"Ben/.DS_Store": b"x"})))


def test_links_out_of_the_folder_are_refused(tmp_path):
    secret = write_tree(tmp_path / "outside", {"secret.jpg": PHOTO})
    root = write_tree(tmp_path / "train", {"Ben/1.jpg": PHOTO})
    (root / "Ben" / "2.jpg").symlink_to(secret / "secret.jpg")
    with pytest.raises(DatasetNotValid, match="symbolic link"):
        list(iter_folder_photos(root))


def test_a_linked_folder_out_of_the_folder_is_refused(tmp_path):
    outside = write_tree(tmp_path / "outside", {"1.jpg": PHOTO})
    root = write_tree(tmp_path / "train", {"Ben/1.jpg": PHOTO})
    (root / "Madonna").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetNotValid, match="symbolic link"):
        list(iter_folder_photos(root))


def test_links_within_the_folder_are_followed(tmp_path):
    root = write_tree(tmp_path / "train", {"Ben/1.jpg": jpeg(0), "Madonna/1.jpg": jpeg(1)})
    (root / "Ben" / "2.jpg").symlink_to(root / "Madonna" / "1.jpg")
    (root / "Ben" / "loop").symlink_to(root, target_is_directory=True)
    assert [(photo.name, photo.data) for photo in iter_folder_photos(root)] == [
        ("Ben/1.jpg", jpeg(0)),
        ("Ben/2.jpg", jpeg(1)),
        ("Madonna/1.jpg", jpeg(1)),
    ]


def test_a_fifo_is_refused_rather_than_read(tmp_path):
    root = write_tree(tmp_path / "train", {"Ben/1.jpg": PHOTO})
    os.mkfifo(root / "Ben" / "2.jpg")
    with pytest.raises(DatasetNotValid, match="not a regular file"):
        list(iter_folder_photos(root))


def test_photo_source_opens_zip_files_and_folders_alike(tmp_path, on_disk):
    folder = write_tree(tmp_path / "train", {"Ben/1.jpg": jpeg(0), "Madonna/1.jpg": jpeg(1)})
    archive = on_disk(photos("Ben/1.jpg", "Madonna/1.jpg"))
    assert list(photo_source(folder)) == list(photo_source(archive))
    assert photo_count(folder) == photo_count(archive) == 2


def test_photo_source_applies_limits_to_zip_files(on_disk):
    with pytest.raises(ArchiveTooLarge):
        list(photo_source(on_disk(photos("Ben/1.jpg")), ArchiveLimits(max_entry_bytes=10)))


def test_limits_come_from_the_config_section():
    section = SimpleNamespace(max_image_pixels=1, max_entries=7, max_ratio=5.0)
    assert limits_from(section) == ArchiveLimits(max_entries=7, max_ratio=5.0)


def test_real_training_set_zipped_or_not(faces, tmp_path):
    train = faces / "celebrities" / "train"
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
        for path in sorted(train.rglob("*")):
            writer.write(path, path.relative_to(train.parent).as_posix())  # train/Person/x.jpg

    from_folder = {(photo.person, Path(photo.name).name) for photo in photo_source(train)}
    from_zip = {(photo.person, Path(photo.name).name) for photo in photo_source(archive)}
    assert from_folder == from_zip
    assert len(from_zip) == 93
    assert {person for person, _ in from_zip} == {
        "Ben Afflek", "Elton John", "Jerry Seinfield", "Madonna", "Mindy Kaling"
    }


# --- fuzz: damaged archives only ever raise the typed errors, and never hang ------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [
    archive_of(("Ben/1.jpg", PHOTO), ("Madonna/1.jpg", jpeg(1))),
    archive_of(("train/Ben/1.jpg", PHOTO), ("train/Ben/2.jpg", PHOTO), compression=zipfile.ZIP_STORED),
]


def reads_or_raises_typed(data: bytes) -> None:
    with time_limit(5):
        try:
            list(iter_photos(io.BytesIO(data)))
        except PyRecognizerError:
            pass


@FUZZ
@given(data=st.binary(max_size=2048) | st.binary().map(lambda tail: b"PK\x03\x04" + tail))
def test_fuzz_random_bytes(data):
    reads_or_raises_typed(data)


@FUZZ
@given(data=mutated(SEEDS))
def test_fuzz_mutated_archives(data):
    reads_or_raises_typed(data)
