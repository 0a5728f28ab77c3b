"""Download COCO 2017 zips with checksum verification and atomic extraction.

Each zip streams to a hidden ``.part`` file beside the destination, is checked against its known
checksum (a mismatch deletes it and raises), and is extracted to a temporary folder that is renamed
into place only when complete; so ``dest/val2017`` either holds the whole split or does not exist,
and a part that is already there is not downloaded again.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path

COCO_URL = "http://images.cocodataset.org"
# part → (path under the base URL, top-level folder inside the zip)
COCO_PARTS = {
    "train2017": ("zips/train2017.zip", "train2017"),
    "val2017": ("zips/val2017.zip", "val2017"),
    "test2017": ("zips/test2017.zip", "test2017"),
    "annotations": ("annotations/annotations_trainval2017.zip", "annotations"),
}
# The md5 sums published for the official zips (the same table appears in several COCO loaders,
# e.g. torchvision-style dataset code such as pytorchcocotools' and Avalanche's).
COCO_CHECKSUMS = {
    "train2017": "md5:cced6f7f71b7629ddf16f17bbcfab6b2",
    "val2017": "md5:442b8da7639aecaf257c1dceb8ba8c80",
    "test2017": "md5:77ad2c53ac5d0aea611d422c0938fb35",
    "annotations": "md5:f4bbac642086de4f52a3fdda2de5fa2c",
}
CHUNK = 1 << 20


def download_coco(
    dest: str | Path,
    parts: Iterable[str] = ("val2017", "annotations"),
    base_url: str = COCO_URL,
    checksums: Mapping[str, str] = COCO_CHECKSUMS,
    progress: bool = True,
) -> Path:
    """Download and extract COCO 2017 parts into ``dest`` (a COCO root afterwards).

    Args:
        dest: destination folder; gets ``val2017/``, ``annotations/``, ... .
        parts: any of ``train2017``, ``val2017``, ``test2017``, ``annotations``.
        base_url: server holding ``zips/`` and ``annotations/`` (override for a mirror).
        checksums: part → ``"md5:<hex>"`` or ``"sha256:<hex>"``; every part needs one.
        progress: show tqdm progress bars.

    Returns:
        ``dest``.

    Raises:
        WorkbenchError: unknown part, network failure, checksum mismatch (naming the file,
            expected and actual), or a zip with unexpected content.

    Example:
        >>> download_coco("data/coco", parts=["val2017", "annotations"])  # doctest: +SKIP
        PosixPath('data/coco')
    """
    dest = Path(dest)
    parts = list(parts)
    unknown = [p for p in parts if p not in COCO_PARTS]
    if unknown:
        raise WorkbenchError(
            f"unknown COCO part(s) {', '.join(unknown)}; choose from {', '.join(COCO_PARTS)}"
        )
    missing = [p for p in parts if p not in checksums]
    if missing:
        raise WorkbenchError(f"no checksum for part(s) {', '.join(missing)}: refusing an unverified download")
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        remote, top = COCO_PARTS[part]
        if (dest / top).is_dir():
            continue  # extracted atomically, so present means complete
        url = f"{base_url.rstrip('/')}/{remote}"
        archive = dest / f".{PurePosixPath(remote).name}.part"
        try:
            _fetch(url, archive, checksums[part], progress)
            _extract(archive, dest, top, progress)
        finally:
            archive.unlink(missing_ok=True)
    return dest


def _fetch(url: str, target: Path, checksum: str, progress: bool) -> None:
    """Stream ``url`` to ``target``, hashing on the way; raise on a checksum mismatch."""
    algo, _, expected = checksum.rpartition(":")
    algo = algo or ("md5" if len(expected) == 32 else "sha256")
    if algo not in ("md5", "sha256"):
        raise WorkbenchError(f"unsupported checksum algorithm {algo!r} (use md5 or sha256)")
    digest = hashlib.new(algo)
    name = PurePosixPath(url).name
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as fh:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as err:
        raise WorkbenchError(f"download failed: {getattr(err, 'reason', err)}", path=url) from None
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise WorkbenchError(
            f"checksum mismatch from {url}: expected {algo} {expected}, got {actual}", path=name
        )


def _extract(archive: Path, dest: Path, top: str, progress: bool) -> None:
    """Extract a zip whose entries all lie under ``top/`` into ``dest/top``, atomically."""
    name = archive.name.removeprefix(".").removesuffix(".part")
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if not members:
                raise WorkbenchError("archive is empty", path=name)
            for info in members:
                path = PurePosixPath(info.filename)
                if path.is_absolute() or ".." in path.parts or path.parts[0] != top:
                    raise WorkbenchError(
                        f"unexpected entry {info.filename!r}; expected everything under {top}/", path=name
                    )
            with atomic_path(dest / top) as tmp:
                for info in tqdm(
                    members, desc=f"extract {name}", unit="file", disable=not progress, leave=False
                ):
                    zf.extract(info, tmp.parent)
    except zipfile.BadZipFile as err:
        raise WorkbenchError(f"not a valid zip archive ({err})", path=name) from None
