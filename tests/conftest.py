"""Test session set-up: no network, offline environment, shared paths."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import workbench  # noqa: F401  (configures the offline environment)

# The fixture notebooks are inputs of the pipeline tests (they need run parameters), not notebooks
# for nbval to execute on their own.
collect_ignore = ["fixtures"]

REPO = Path(__file__).resolve().parent.parent
ZOO_DIR = Path(os.environ.get("WORKBENCH_ZOO_DIR", REPO.parent / "shared" / "zoo")).resolve()
TINY_COCO = Path(
    os.environ.get("WORKBENCH_TINY_COCO", REPO.parent / "shared" / "data" / "tiny-coco")
).resolve()


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(address) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:  # AF_UNIX paths and the like are local
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}: tests must not use the network")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}: tests must not use the network")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost", "") and not _is_loopback((host,)):
        raise NetworkBlocked(f"test tried to resolve {host!r}: tests must not use the network")
    return _real_getaddrinfo(host, *args, **kwargs)


def pytest_sessionstart(session):
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo


# ---- parallel runs (pytest-xdist; `make test` runs two workers) ------------------------------------
def pytest_xdist_make_scheduler(config, log):
    """One work unit per test file, so a file's module fixtures are built by one worker only, and
    one for all the notebooks: they share one run folder and run in order (00_tour first)."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "notebooks" if path.endswith(".ipynb") else path

    return FileScheduling(config, log)


def shared_folder(tmp_path_factory, name: str) -> Path:
    """``<session temp>/shared/<name>``: one folder for every worker of this session (xdist gives each
    worker ``<session temp>/popen-gwN``), the session's own base folder otherwise."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared" / name


@contextlib.contextmanager
def built_once(path: Path) -> Iterator[None]:
    """Hold the session's lock on ``path`` while it is checked and built: the other workers wait,
    then find it built."""
    from workbench.fileio import exclusive

    with exclusive(path):
        yield


def _digest(key) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """``$WORKBENCH_ZOO_DIR`` (default ``../shared/zoo``); skips when absent."""
    if not (ZOO_DIR / "st").is_dir():
        pytest.skip(f"ST zoo not found at {ZOO_DIR} (set WORKBENCH_ZOO_DIR)")
    return ZOO_DIR


@pytest.fixture(scope="session")
def tiny_coco() -> Path:
    """``../shared/data/tiny-coco``; skips when absent."""
    if not (TINY_COCO / "instances_train2017_small.json").is_file():
        pytest.skip(f"tiny-coco not found at {TINY_COCO} (set WORKBENCH_TINY_COCO)")
    return TINY_COCO


CHECKPOINT = REPO / "data" / "weights" / "yolov8n-pose-synth.pt"


@pytest.fixture()
def person_gt(tiny_coco, tmp_path):
    """tiny-coco restricted to persons (33 annotations in 10 of 16 images; no keypoints)."""
    gt = json.loads((tiny_coco / "instances_train2017_small.json").read_text())
    gt["categories"] = [c for c in gt["categories"] if c["id"] == 1]
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] == 1]
    path = tmp_path / "person.json"
    path.write_text(json.dumps(gt))
    return path, tiny_coco / "train_2017_small"


def one_box_coco(root: Path, write_image: bool = True, name: str = "boxes.json") -> tuple[Path, Path]:
    """A COCO JSON of one 64x48 image with one person box and no keypoints, and its image folder
    (holding the grey image, or empty for checks that must fail before any image is read)."""
    (root / "images").mkdir()
    if write_image:
        import cv2
        import numpy as np

        cv2.imwrite(str(root / "images" / "a.jpg"), np.full((48, 64, 3), 128, np.uint8))
    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    ann = root / name
    ann.write_text(json.dumps(gt))
    return ann, root / "images"


@pytest.fixture(scope="session")
def checkpoint_record() -> dict:
    """The committed pretrained checkpoint's record (generator version, val AP, ...)."""
    import json

    record = CHECKPOINT.with_suffix(".json")
    assert CHECKPOINT.is_file() and record.is_file(), f"{CHECKPOINT} and its .json are committed files"
    return json.loads(record.read_text())


@pytest.fixture(scope="session")
def synth_eval_set(tmp_path_factory, checkpoint_record):
    """The checkpoint's synthetic val split (the very images its recorded val AP was measured on:
    an image depends only on seed, split and index) and 32 train images for calibration."""
    from workbench.config import RunConfig
    from workbench.data.prepare import prepare_dataset

    data = checkpoint_record["dataset"]
    cfg = RunConfig(
        dataset="synthetic",
        synth_preset=data["preset"],
        synth_train=32,
        synth_val=data["val"],
        synth_imgsz=data["imgsz"],
        seed=data["seed"],
    )
    return prepare_dataset(cfg, progress=False)


@pytest.fixture(scope="session", autouse=True)
def export_once_per_session(tmp_path_factory):
    """An export without model edits (the plain one, or a split head) of the same weights bytes,
    size and outputs is made once per session (by whichever worker asks first) and copied where a
    test asks for it: an Ultralytics → onnx2tf export costs 20 s to minutes (by load) whatever the
    image size, and several tests export the same checkpoint. Exports that edit the model (equalize,
    bias correction, QAT, ...) always run. Returns the dict of exports this worker made itself
    ``{key: ExportResult}`` (tests may check it)."""
    import dataclasses
    import functools
    import shutil

    import workbench.export as export_module
    from workbench.exported import EXPORT_META, ExportResult
    from workbench.fileio import atomic_path, sha256_file, write_json

    real = export_module.export_saved_model
    root = shared_folder(tmp_path_factory, "exports-once")
    known, made = {}, {}  # every export this worker used; those it made itself

    def export_saved_model(weights, imgsz, out, *, normalize=True, head="single", edit=None):
        edits = edit.keywords.get("edits") if isinstance(edit, functools.partial) else None
        plain = edit is None or (edits is not None and set(edits.changed()) <= {"head"})
        if not plain or not Path(weights).is_file():  # edits, or an error path: the real export
            return real(weights, imgsz, out, normalize=normalize, head=head, edit=edit)
        key = (sha256_file(weights), int(imgsz), normalize, head)
        if key not in known:
            folder = root / _digest(key) / "saved_model"
            with built_once(folder):
                if (folder / EXPORT_META).is_file():
                    known[key] = ExportResult.load(folder)
                else:
                    known[key] = made[key] = real(
                        weights, imgsz, folder, normalize=normalize, head=head, edit=edit
                    )
        result = dataclasses.replace(known[key], saved_model=Path(out), weights=str(Path(weights).resolve()))
        with atomic_path(out) as staged:
            shutil.copytree(known[key].saved_model, staged)
            meta = result.to_dict()
            meta.pop("saved_model")
            write_json(Path(staged) / EXPORT_META, meta)  # the caller's weights path, as the export records
        return result

    export_module.export_saved_model = export_saved_model
    yield made
    export_module.export_saved_model = real


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """A conversion (with its recipes' export) once per session for each distinct file: tests that need
    the same file (same SavedModel, scheme, I/O, calibration and recipes), in any worker, share it."""
    from workbench.fileio import write_json
    from workbench.jobs import quantize_with_recipes
    from workbench.quantize import QuantizeResult

    root = shared_folder(tmp_path_factory, "converted")

    def convert(
        saved_model: Path, scheme: str, *, io: str, calib: Path, calib_count: int, recipes: list[str]
    ):
        key = (str(saved_model), scheme, io, str(calib), calib_count, tuple(recipes))
        out = root / f"{_digest(key)}-{scheme}+{'+'.join(recipes)}.tflite"
        record = out.with_suffix(".json")
        with built_once(out):
            if record.is_file():
                return QuantizeResult(**dict(json.loads(record.read_text()), path=out))
            result = quantize_with_recipes(
                saved_model, scheme, out, io=io, calib=calib, calib_count=calib_count, recipes=recipes
            )
            write_json(record, result.to_dict())
            return result

    return convert


# ST's SSD conversions: the family tests compare ours with ST's int8 file, calibrated as ST's card was
# (100 images); the targets' checks read only shapes, ops and sizes, so they share the same files
ST_SSD_CALIB = 100


@pytest.fixture(scope="session")
def st_ssd_converted(tmp_path_factory):
    """``convert(imgsz, scheme)``: ST's SSD ``.h5`` of that size exported and converted (uint8 in,
    float out: ST's deployment form) once per run for every worker, by the workbench's keyed jobs; skips
    when the weights or calibration images are absent. ``$WORKBENCH_TARGETS_CACHE``: a folder whose
    files are reused while their keys (weights' and images' digests) match, e.g. the benchmark's."""
    from workbench.jobs import convert_weights
    from workbench.locations import data_dir, weights_dir
    from workbench.targets.published import SSD_WEIGHTS

    weights = weights_dir() / SSD_WEIGHTS
    calib = data_dir() / "coco-person-train2017" / "images"
    cache = os.environ.get("WORKBENCH_TARGETS_CACHE")
    root = Path(cache) if cache else shared_folder(tmp_path_factory, "st_ssd")

    def convert(imgsz: int, scheme: str):
        if not Path(str(weights).format(imgsz=imgsz)).is_file() or not calib.is_dir():
            pytest.skip(
                f"ST's SSD .h5 or COCO person images not found: {str(weights).format(imgsz=imgsz)}, {calib} "
                "(set WORKBENCH_WEIGHTS_DIR / WORKBENCH_DATA_DIR)"
            )
        folder = root / f"ssd{imgsz}"
        with built_once(folder):  # one worker converts, the others wait and reuse (the keys match)
            return convert_weights(
                str(weights), imgsz, scheme, folder, io="uf", calib=calib, calib_count=ST_SSD_CALIB
            )

    return convert


@pytest.fixture(scope="session")
def pose256(tmp_path_factory, synth_eval_set):
    """The checkpoint exported at 256 and converted to fp32, int8 per-channel and int8 per-tensor
    (once per session, whichever worker asks first)."""
    from workbench.export import export_saved_model
    from workbench.fileio import write_json
    from workbench.quantize import quantize

    root = shared_folder(tmp_path_factory, "pose256")
    record = root / "files.json"
    with built_once(root):
        if record.is_file():
            return {name: Path(path) for name, path in json.loads(record.read_text()).items()}
        export = export_saved_model(CHECKPOINT, 256, root / "saved_model")
        files = {"saved_model": export.saved_model}
        for scheme in ("fp32", "int8-per-channel", "int8-per-tensor"):
            result = quantize(
                export.saved_model,
                scheme,
                root / f"{scheme}.tflite",
                io="uf",
                calib=synth_eval_set.train_images,
                calib_count=32,
            )
            files[scheme] = result.path
        write_json(record, {name: str(path) for name, path in files.items()})
        return files
