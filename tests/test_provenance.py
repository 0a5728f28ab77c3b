"""Provenance: package versions, dataset and file hashes, the Provenance record."""

from __future__ import annotations

import hashlib
import platform

import pytest

from workbench.errors import WorkbenchError
from workbench.provenance import Provenance, dataset_hash, file_sha256, package_versions


def test_package_versions_match_installed():
    import numpy

    versions = package_versions()
    assert versions["numpy"] == numpy.__version__
    assert versions["python"] == platform.python_version()
    assert versions["workbench"] is not None


def test_file_sha256_is_content_hash(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x00\x01weights")
    assert file_sha256(path) == hashlib.sha256(b"\x00\x01weights").hexdigest()
    with pytest.raises(WorkbenchError, match="nope.bin"):
        file_sha256(tmp_path / "nope.bin")


def test_dataset_hash_depends_on_content_not_names_or_order(tmp_path):
    a, b, a_copy = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "renamed.json"
    a.write_text('{"images": [1]}')
    b.write_text('{"images": [2]}')
    a_copy.write_text('{"images": [1]}')
    assert dataset_hash([a, b]) == dataset_hash([b, a])
    assert dataset_hash(a) == dataset_hash(a_copy)
    assert dataset_hash(a) != dataset_hash(b)
    assert dataset_hash([a, b]) != dataset_hash(a)
    with pytest.raises(WorkbenchError, match="missing.json"):
        dataset_hash([a, tmp_path / "missing.json"])


def test_provenance_collect_and_round_trip(tmp_path):
    model, ann = tmp_path / "m.tflite", tmp_path / "ann.json"
    model.write_bytes(b"model")
    ann.write_text("{}")
    prov = Provenance.collect("0123456789ab", model_path=model, ann_json_paths=[ann])
    assert prov.model_sha256 == hashlib.sha256(b"model").hexdigest()
    assert prov.dataset_hash == dataset_hash(ann)
    assert prov.packages["python"] == platform.python_version()
    assert Provenance.from_dict(prov.to_dict()) == prov


def test_provenance_rejects_non_hex_hash():
    with pytest.raises(WorkbenchError, match="model_sha256"):
        Provenance(config_hash="0123456789ab", model_sha256="not-a-hash")
    with pytest.raises(WorkbenchError, match="prov.json: config_hash"):
        Provenance.from_dict({"config_hash": None}, source="prov.json")
