"""Where the real datasets come from, and how to fetch them into ``raw/<dataset>/``.

Checksums and sizes are filled in only where a value is published by the dataset's authors;
elsewhere they are None and the ``note`` says so (the archives' own CRCs still catch
corruption during extraction).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ops.data.archives import is_archive, unpack_archive
from ops.data.downloads import ProgressCallback, download
from ops.storage.atomic import write_text_atomic

DOWNLOADS_SUBDIR = "downloads"


class ManualDownloadRequired(RuntimeError):
    """Part of a dataset must be fetched by hand; the message says what and where."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    sha256: str | None
    size: int | None
    note: str = ""


@dataclass(frozen=True)
class DatasetSource:
    """Files to download, plus an optional step done by hand.

    ``manual`` is the instruction text for that step and ``manual_folder`` the folder it must
    produce inside the dataset's raw directory.
    """

    name: str
    files: list[RemoteFile] = field(default_factory=list)
    manual: str | None = None
    manual_folder: str | None = None

    def __post_init__(self) -> None:
        if self.manual is not None and not self.manual_folder:
            raise ValueError(f"dataset source {self.name!r}: a manual step needs manual_folder")


_NO_CHECKSUM = "No SHA-256 or exact size is published for this file, so none is checked."

KARPATHY_SPLITS = RemoteFile(
    url="http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
    filename="caption_datasets.zip",
    sha256=None,
    size=None,
    note=(
        "Karpathy & Fei-Fei (CVPR 2015) caption splits: dataset_flickr30k.json, "
        "dataset_coco.json, dataset_flickr8k.json. " + _NO_CHECKSUM
    ),
)

COCO2014_TRAIN = RemoteFile(
    url="http://images.cocodataset.org/zips/train2014.zip",
    filename="train2014.zip",
    sha256=None,
    size=None,
    note="COCO 2014 training images (82,783 JPEGs in train2014/). " + _NO_CHECKSUM,
)
COCO2014_VAL = RemoteFile(
    url="http://images.cocodataset.org/zips/val2014.zip",
    filename="val2014.zip",
    sha256=None,
    size=None,
    note=(
        "COCO 2014 validation images (40,504 JPEGs in val2014/); the Karpathy val/test/restval "
        "splits are drawn from these. " + _NO_CHECKSUM
    ),
)
COCO2014_ANNOTATIONS = RemoteFile(
    url="http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
    filename="annotations_trainval2014.zip",
    sha256=None,
    size=None,
    note="COCO 2014 captions/instances JSON in annotations/. " + _NO_CHECKSUM,
)
COCO2017_TRAIN = RemoteFile(
    url="http://images.cocodataset.org/zips/train2017.zip",
    filename="train2017.zip",
    sha256=None,
    size=None,
    note="COCO 2017 training images (train2017/). " + _NO_CHECKSUM,
)
COCO2017_VAL = RemoteFile(
    url="http://images.cocodataset.org/zips/val2017.zip",
    filename="val2017.zip",
    sha256=None,
    size=None,
    note="COCO 2017 validation images (val2017/). " + _NO_CHECKSUM,
)
COCO2017_ANNOTATIONS = RemoteFile(
    url="http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
    filename="annotations_trainval2017.zip",
    sha256=None,
    size=None,
    note="COCO 2017 captions/instances JSON in annotations/. " + _NO_CHECKSUM,
)

_ENTITIES_REPO = "https://github.com/BryanPlummer/flickr30k_entities/raw/master"
FLICKR30K_ENTITIES_ANNOTATIONS = RemoteFile(
    url=f"{_ENTITIES_REPO}/annotations.zip",
    filename="annotations.zip",
    sha256=None,
    size=None,
    note=(
        "Flickr30K Entities v1.0 (Plummer et al.): Sentences/<image id>.txt phrase markup and "
        "Annotations/<image id>.xml boxes. " + _NO_CHECKSUM
    ),
)
FLICKR30K_ENTITIES_SPLITS = [
    RemoteFile(
        url=f"{_ENTITIES_REPO}/{split}.txt",
        filename=f"{split}.txt",
        sha256=None,
        size=None,
        note=f"Flickr30K Entities {split} image ids, one per line. " + _NO_CHECKSUM,
    )
    for split in ("train", "val", "test")
]

FLICKR30K_IMAGES_FOLDER = "flickr30k-images"
FLICKR30K_IMAGES_MANUAL = (
    "Flickr30K images cannot be downloaded automatically: they are handed out after filling in "
    "the request form linked from http://shannon.cs.illinois.edu/DenotationGraph/ (Young et al., "
    "TACL 2014). Download flickr30k-images.tar.gz; it holds the folder flickr30k-images/ with "
    "31,783 JPEG files named <Flickr id>.jpg (e.g. 1000092795.jpg). Either extract it so that "
    "the folder flickr30k-images sits in the dataset's raw directory, or set `local_path` in the "
    "dataset config to the extracted flickr30k-images folder or to flickr30k-images.tar.gz."
)

SOURCES: dict[str, DatasetSource] = {
    "flickr30k": DatasetSource(
        name="flickr30k",
        files=[KARPATHY_SPLITS],
        manual=FLICKR30K_IMAGES_MANUAL,
        manual_folder=FLICKR30K_IMAGES_FOLDER,
    ),
    "flickr30k_entities": DatasetSource(
        name="flickr30k_entities",
        files=[FLICKR30K_ENTITIES_ANNOTATIONS, *FLICKR30K_ENTITIES_SPLITS],
        manual=FLICKR30K_IMAGES_MANUAL,
        manual_folder=FLICKR30K_IMAGES_FOLDER,
    ),
    # The Karpathy COCO split names 2014 files (val2014/COCO_val2014_<id>.jpg).
    "coco": DatasetSource(
        name="coco",
        files=[KARPATHY_SPLITS, COCO2014_TRAIN, COCO2014_VAL, COCO2014_ANNOTATIONS],
    ),
    # Same pixels, regrouped and renamed to <12-digit id>.jpg: a loader must map Karpathy
    # entries by their ``cocoid`` to use it.
    "coco2017": DatasetSource(
        name="coco2017",
        files=[KARPATHY_SPLITS, COCO2017_TRAIN, COCO2017_VAL, COCO2017_ANNOTATIONS],
    ),
}


def get_source(name: str) -> DatasetSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(
            f"no download source for dataset {name!r}; known: {sorted(SOURCES)}"
        ) from None


def manual_instructions(source: DatasetSource, raw_dir: Path, local_path: Path | None) -> str:
    """The manual text plus the exact path the step must produce (for error messages)."""
    if source.manual is None or source.manual_folder is None:
        raise ValueError(f"dataset source {source.name!r} has no manual step")
    lines = [source.manual, f"Expected folder: {Path(raw_dir) / source.manual_folder}"]
    if local_path is not None:
        lines.append(f"Configured local_path {local_path} does not exist or is not usable.")
    else:
        lines.append("No local_path is configured.")
    return "\n".join(lines)


def _has_entries(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    with os.scandir(folder) as entries:
        return next(entries, None) is not None


def _link_folder(link: Path, folder: Path) -> None:
    """Point ``link`` at ``folder``, replacing a stale link in one rename."""
    staging = link.with_name(f".{link.name}.link-{os.getpid()}")
    staging.unlink(missing_ok=True)
    os.symlink(folder.resolve(), staging, target_is_directory=True)
    os.replace(staging, link)


def _provide_manual_folder(
    source: DatasetSource, folder_name: str, raw_dir: Path, local_path: Path | None
) -> None:
    expected = raw_dir / folder_name
    if _has_entries(expected):
        return
    if local_path is None or not Path(local_path).exists():
        raise ManualDownloadRequired(manual_instructions(source, raw_dir, local_path))
    local_path = Path(local_path)
    raw_dir.mkdir(parents=True, exist_ok=True)
    if local_path.is_dir():
        if not _has_entries(local_path):
            raise ManualDownloadRequired(
                f"local_path {local_path} is an empty folder.\n"
                + manual_instructions(source, raw_dir, local_path)
            )
        if expected.exists() and not expected.is_symlink():
            raise ManualDownloadRequired(
                f"{expected} exists but is empty; remove it or fill it.\n"
                + manual_instructions(source, raw_dir, local_path)
            )
        _link_folder(expected, local_path)
    elif is_archive(local_path):
        unpack_archive(local_path, raw_dir)
        if not _has_entries(expected):
            raise ManualDownloadRequired(
                f"{local_path} did not contain a top-level folder {folder_name}/.\n"
                + manual_instructions(source, raw_dir, local_path)
            )
    else:
        raise ManualDownloadRequired(
            f"local_path {local_path} is neither a folder nor a .tar.gz/.zip archive.\n"
            + manual_instructions(source, raw_dir, local_path)
        )


def _extract_once(archive: Path, target: Path) -> None:
    """Extract unless a marker shows this very archive file was already extracted."""
    marker = archive.with_name(archive.name + ".extracted")
    info = archive.stat()
    stamp = {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in stamp.items()):
            return
    files = unpack_archive(archive, target)
    write_text_atomic(marker, json.dumps({**stamp, "files": len(files)}))


def acquire(
    source: DatasetSource,
    raw_dir: Path,
    local_path: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch ``source`` into ``raw_dir`` and return ``raw_dir``.

    The manual step is checked first, so a missing hand-downloaded folder fails before any
    large download: :class:`ManualDownloadRequired` quotes the instructions and the expected
    path. A ``local_path`` folder is linked as ``raw_dir/<manual_folder>``; a ``local_path``
    archive is extracted into ``raw_dir``. Archives are downloaded to ``raw_dir/downloads`` and
    extracted into ``raw_dir`` once; other files are downloaded straight into ``raw_dir``.
    Re-running with everything in place touches neither the network nor the extracted files.
    """
    raw_dir = Path(raw_dir)
    if source.manual is not None and source.manual_folder is not None:
        _provide_manual_folder(source, source.manual_folder, raw_dir, local_path)
    for remote in source.files:
        if is_archive(Path(remote.filename)):
            archive = download(
                remote.url,
                raw_dir / DOWNLOADS_SUBDIR / remote.filename,
                sha256=remote.sha256,
                size=remote.size,
                progress=progress,
            )
            _extract_once(archive, raw_dir)
        else:
            download(
                remote.url,
                raw_dir / remote.filename,
                sha256=remote.sha256,
                size=remote.size,
                progress=progress,
            )
    return raw_dir
