"""COCO download against a loopback HTTP server: checksums verified, extraction atomic."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.data.download import COCO_CHECKSUMS, download_coco
from workbench.errors import WorkbenchError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self):
        _QuietHandler.requests.append(self.path)
        super().do_GET()


def _zip(path: Path, entries: dict[str, bytes]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path):
    """A fake images.cocodataset.org on 127.0.0.1 serving small zips; yields (url, checksums)."""
    served = tmp_path / "served"
    val_md5 = _zip(
        served / "zips/val2017.zip",
        {"val2017/000000000139.jpg": b"jpeg-1", "val2017/000000000285.jpg": b"jpeg-2"},
    )
    ann_zip = served / "annotations/annotations_trainval2017.zip"
    _zip(ann_zip, {"annotations/person_keypoints_val2017.json": json.dumps({"images": []}).encode()})
    checksums = {
        "val2017": f"md5:{val_md5}",
        "annotations": "sha256:" + hashlib.sha256(ann_zip.read_bytes()).hexdigest(),
    }
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _QuietHandler.requests.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", checksums, served
    finally:
        server.shutdown()
        server.server_close()


def test_good_checksums_extract_and_second_call_is_a_no_op(mirror, tmp_path):
    url, checksums, _ = mirror
    dest = download_coco(tmp_path / "coco", base_url=url, checksums=checksums, progress=False)
    assert (dest / "val2017/000000000139.jpg").read_bytes() == b"jpeg-1"
    assert (dest / "annotations/person_keypoints_val2017.json").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["annotations", "val2017"]  # no .part or temp left
    assert len(_QuietHandler.requests) == 2
    download_coco(dest, base_url=url, checksums=checksums, progress=False)
    assert len(_QuietHandler.requests) == 2


def test_bad_checksum_via_cli_exits_2_and_leaves_nothing(mirror, tmp_path, capsys):
    url, _, served = mirror
    dest = tmp_path / "coco"
    code = main(["data", "coco", "--download", str(dest), "--parts", "val2017", "--base-url", url])
    assert code == 2
    err = capsys.readouterr().err
    actual = hashlib.md5((served / "zips/val2017.zip").read_bytes()).hexdigest()
    expected = COCO_CHECKSUMS["val2017"].split(":")[1]
    assert "val2017.zip" in err and f"expected md5 {expected}" in err and f"got {actual}" in err
    assert list(dest.iterdir()) == []


def test_cli_checksum_override_and_json(mirror, tmp_path, capsys):
    url, checksums, _ = mirror
    dest = tmp_path / "coco"
    code = main(["data", "coco", "--download", str(dest), "--parts", "val2017", "--base-url", url,
                 "--checksum", f"val2017={checksums['val2017']}", "--json"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"dest": str(dest), "parts": ["val2017"]}
    # the two images, beside the marker saying the workbench wrote the folder (fileio.OWNER_MARKER)
    assert len([p for p in (dest / "val2017").iterdir() if not p.name.startswith(".")]) == 2


def test_zip_with_escaping_entry_is_refused(mirror, tmp_path):
    url, checksums, served = mirror
    md5 = _zip(served / "zips/val2017.zip", {"val2017/a.jpg": b"x", "val2017/../../evil.txt": b"x"})
    with pytest.raises(WorkbenchError, match=r"val2017\.zip: unexpected entry 'val2017/\.\./\.\./evil\.txt'"):
        download_coco(
            tmp_path / "coco", ["val2017"], base_url=url, checksums={"val2017": md5}, progress=False
        )
    assert list((tmp_path / "coco").iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_unknown_part_and_unreachable_server(tmp_path):
    with pytest.raises(WorkbenchError, match=r"unknown COCO part\(s\) val2014"):
        download_coco(tmp_path, ["val2014"])
    with pytest.raises(WorkbenchError, match=r"http://127\.0\.0\.1:9/zips/val2017\.zip: download failed"):
        download_coco(tmp_path / "coco", ["val2017"], base_url="http://127.0.0.1:9", progress=False)
    assert list((tmp_path / "coco").iterdir()) == []
