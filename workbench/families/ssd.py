"""The ``ssd`` family: ST's SSD MobileNet v1 as Keras 2 ``.h5`` (AI-ModelZoo 2.x ``st_ssd_mobilenet_v1``).

* **Load** with ``tf_keras.models.load_model(path, compile=False)`` (Keras 3 rejects the files).
  An SSD outputs softmax scores (A, 1 + classes), box offsets (A, 4) and anchors (A, 4); a model
  with only scores and offsets takes its anchors from the config yaml (see :mod:`.st_config`).
* **Pre-process** as ST's ``<model>_config.yaml`` says: stretch to the input size (``nearest`` for
  the 2.x files), RGB, ``pixel / 127.5 - 1``. Recorded in every converted file's metadata, so
  calibration and evaluation prepare images the same way.
* **Export**: a SavedModel of the model with a fixed (1, S, S, 3) float input; outputs are already
  normalized (scores and offsets are small, anchors in [0, 1]), so int8 needs no head change.
  Convert with uint8 input / float outputs, ST's deployment form.
* **Decode** with :func:`workbench.decode.ssd.decode_ssd` (the model's anchors).
* **Fine-tune** in tf_keras with an SSD loss (:mod:`.ssd_train`).
* **Sizes**: one ``.h5`` per input size; ``model: .../st_ssd_mobilenet_v1_025_{imgsz}.h5`` names
  them all.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import Task, resolve_path
from workbench.errors import WorkbenchError
from workbench.families.base import ModelFamily, Preprocessing
from workbench.families.st_config import StSsdConfig, config_beside, load_st_config
from workbench.fileio import atomic_path, sha256_file, write_json
from workbench.locations import IMGSZ_FIELD
from workbench.safeload import check_weights

if TYPE_CHECKING:
    from workbench.config import RunConfig
    from workbench.data.prepare import PreparedDataset
    from workbench.export import ExportResult


class SsdFamily(ModelFamily):
    """ST's Keras SSD MobileNet v1 (person detection)."""

    name = "ssd"
    tasks = (Task.DETECT,)
    decoder = "ssd"

    def claims(self, model: str | Path) -> bool:
        return Path(str(model)).suffix in (".h5", ".keras")

    def weights_for(self, weights: str | Path, imgsz: int) -> Path:
        return resolve_path(str(weights).replace(IMGSZ_FIELD, str(imgsz)))

    def config_for(self, weights: str | Path) -> StSsdConfig:
        """ST's config yaml beside the weights (a fine-tuned ``.h5`` carries a copy of it)."""
        return load_st_config(config_beside(weights))

    def preprocessing(self, weights: str | Path) -> Preprocessing:
        return self.config_for(weights).preprocessing

    # ---- data ---------------------------------------------------------------------------------
    def dataset(self, cfg: RunConfig, need_training: bool | None = None) -> PreparedDataset:
        """The config's dataset without a YOLO copy: the SSD fine-tunes from the COCO JSON itself
        (``train_ann`` of a ``coco`` dataset, else ``annotations/train.json`` of the folder)."""
        from workbench.data.prepare import prepare_dataset

        self.check_task(cfg.task, cfg.model)
        return prepare_dataset(cfg, need_training=False)

    def train_annotations(self, cfg: RunConfig, dataset: PreparedDataset) -> Path:
        from workbench.locations import resolve_data

        ann = (
            resolve_data(cfg.train_ann)
            if cfg.dataset == "coco"
            else Path(dataset.root) / "annotations" / "train.json"
        )
        if ann is None or not ann.is_file() or dataset.train_images is None:
            raise WorkbenchError(
                "fine-tuning an SSD needs training annotations (train_ann and train_images)", path=ann
            )
        return ann

    # ---- training -----------------------------------------------------------------------------
    def retrain(
        self, cfg: RunConfig, start: Path | str, dataset: PreparedDataset, out: Path
    ) -> dict[str, Any]:
        """Fine-tune the ``.h5`` of every image size for ``cfg.epochs`` (0 keeps ST's weights)."""
        for imgsz in cfg.imgsz:
            path = self.weights_for(start, imgsz)
            if not path.is_file():
                raise WorkbenchError(f"SSD weights for imgsz {imgsz} not found", path=path)
        if cfg.epochs == 0:
            return {"weights": str(start), "train_seconds": 0.0, "val": None}
        from workbench.families.ssd_train import fine_tune

        ann = self.train_annotations(cfg, dataset)
        stem = Path(str(start).replace(f"_{IMGSZ_FIELD}", "").replace(IMGSZ_FIELD, "")).stem
        runs, seconds = {}, 0.0
        for imgsz in cfg.imgsz:
            source, target = self.weights_for(start, imgsz), out / f"{stem}-ft_{imgsz}.h5"
            result = fine_tune(
                source,
                ann,
                dataset.train_images,
                target,
                epochs=cfg.epochs,
                batch=cfg.batch,
                seed=cfg.seed,
                **cfg.train_args,
            )
            shutil.copyfile(config_beside(source), config_beside(target))
            runs[str(imgsz)] = result.to_dict()
            seconds += result.seconds
        return {
            "weights": str(out / f"{stem}-ft_{IMGSZ_FIELD}.h5"),
            "train_seconds": seconds,
            "val": None,
            "runs": runs,
        }

    # ---- export -------------------------------------------------------------------------------
    def export(
        self,
        weights: str | Path,
        imgsz: int,
        out: Path,
        *,
        equalize: bool = False,
        split_channels: bool = False,
    ) -> ExportResult:
        """``weights`` (an SSD ``.h5``) → float SavedModel at ``out`` with ST's pre-processing recorded.

        ``equalize`` applies exact cross-layer equalization first (:mod:`workbench.recipes.equalize_keras`);
        ``split_channels`` then splits convolutions by channel range (:mod:`workbench.recipes.split_channels_keras`).
        """
        from workbench.export import EXPORT_META, ExportResult
        from workbench.offline import import_tensorflow

        weights = self.weights_for(weights, imgsz)
        config = self.config_for(weights)
        started = time.perf_counter()
        model = load_ssd(weights, config)
        if equalize:
            from workbench.recipes.equalize_keras import equalize_keras_model

            equalize_keras_model(model)
        if split_channels:
            from workbench.recipes.split_channels_keras import split_keras_model

            split_keras_model(model)
        size = tuple(model.inputs[0].shape[1:3])
        if size != (imgsz, imgsz):
            raise WorkbenchError(
                f"model input is {size[0]}x{size[1]}, not the requested imgsz {imgsz}", path=weights
            )
        tf = import_tensorflow()
        anchors = None if config.anchors is None else tf.constant(config.anchors[None])

        @tf.function(input_signature=[tf.TensorSpec((1, imgsz, imgsz, 3), tf.float32, name="images")])
        def serve(images):
            outputs = model(images, training=False)
            # ST's output order (scores, boxes, anchors); names sort the same way in the .tflite
            named = {"a_scores": outputs[0], "b_boxes": outputs[1]}
            named["c_anchors"] = outputs[2] if anchors is None else anchors
            return named

        result = ExportResult(
            saved_model=Path(out),
            task=Task.DETECT.value,
            imgsz=imgsz,
            names={0: "person"},
            kpt_shape=None,
            normalized=True,
            weights=str(weights),
            weights_sha256=sha256_file(weights),
            seconds=0.0,
            ultralytics={"task": "detect", "imgsz": [imgsz, imgsz], "names": {"0": "person"}},
            family=self.name,
            preprocess=config.preprocessing.mode,
            interpolation=config.preprocessing.interpolation,
            input_range=list(config.preprocessing.input_range),
            equalized=equalize,
            split_channels=split_channels,
        )
        # A bare module holding the variables: saving the Keras model itself re-traces every layer
        # (minutes on 2 cores) for Keras metadata nobody reads back.
        module = tf.Module()
        module.variables_ = list(model.variables)
        module.serve = serve
        with atomic_path(Path(out)) as tmp, contextlib.redirect_stdout(io.StringIO()):
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve})
            result.seconds = round(time.perf_counter() - started, 1)
            meta = result.to_dict()
            meta.pop("saved_model")
            write_json(tmp / EXPORT_META, meta)
        return result


def load_ssd(path: str | Path, config: StSsdConfig | None = None):
    """Load an SSD ``.h5`` with tf_keras and check its outputs; a clear error if it is no SSD."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("SSD weights file not found", path=path)
    from workbench.offline import import_tensorflow

    import_tensorflow()
    import tf_keras

    check_weights(path)
    try:
        model = tf_keras.models.load_model(str(path), compile=False)
    except Exception as err:  # h5py and Keras raise many types for foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkbenchError(
            f"not a loadable Keras model ({type(err).__name__}: {first[:200]})", path=path
        ) from None
    shapes = [tuple(o.shape) for o in model.outputs]
    check_ssd_outputs(shapes, path)
    if len(shapes) == 2 and (config is None or config.anchors is None):
        raise WorkbenchError(
            f"outputs scores and boxes {shapes} but no anchors, and its config yaml has no `anchors:` "
            "((A, 4) corners, or a .npy path); the decoder needs one anchor per box",
            path=config.path if config else path,
        )
    if len(shapes) == 2 and len(config.anchors) != shapes[0][1]:
        raise WorkbenchError(
            f"config has {len(config.anchors)} anchors but the model predicts {shapes[0][1]} boxes",
            path=config.path,
        )
    return model


def check_ssd_outputs(shapes: list[tuple], path: str | Path) -> None:
    """Raise unless ``shapes`` are (N, A, C>=2), (N, A, 4) and optionally (N, A, 4)."""
    ok = (
        len(shapes) in (2, 3)
        and all(len(s) == 3 for s in shapes)
        and len({s[1] for s in shapes}) == 1
        and shapes[0][2] is not None
        and shapes[0][2] >= 2
        and all(s[2] == 4 for s in shapes[1:])
    )
    if not ok:
        raise WorkbenchError(
            f"is not an SSD: its outputs are {[s[1:] for s in shapes]}; expected scores (A, 1+classes), "
            "boxes (A, 4) and anchors (A, 4)",
            path=path,
        )
