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

from workbench.calibration import DEFAULT_CALIB_COUNT
from workbench.config import Task, resolve_path
from workbench.errors import WorkbenchError
from workbench.families.base import ModelFamily, Preprocessing
from workbench.families.ssd_model import check_ssd_outputs, load_ssd
from workbench.families.st_config import StSsdConfig, config_beside, load_st_config
from workbench.fileio import atomic_path, sha256_file, write_json
from workbench.locations import IMGSZ_FIELD
from workbench.recipes.edits import ExportEdits
from workbench.safeload import check_weights

if TYPE_CHECKING:
    import numpy as np

    from workbench.config import RunConfig
    from workbench.data.prepare import PreparedDataset
    from workbench.evaluate import EvalRunner
    from workbench.exported import ExportResult

__all__ = ["SsdFamily", "check_ssd_outputs", "load_ssd"]  # the loader is read from here too


class SsdFamily(ModelFamily):
    """ST's Keras SSD MobileNet v1 (person detection)."""

    name = "ssd"
    tasks = (Task.DETECT,)
    decoder = "ssd"
    export_edits = frozenset({"equalize", "st_optimize", "split_channels", "split_fine"})

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
        edits: ExportEdits = ExportEdits(),
        calib: str | Path | None = None,
        calib_count: int = DEFAULT_CALIB_COUNT,
        normalize: bool = True,
    ) -> ExportResult:
        """``weights`` (an SSD ``.h5``) → float SavedModel at ``out`` with ST's pre-processing recorded.

        ``edits.st_optimize`` runs ST's per-tensor preparation first (:mod:`workbench.recipes.st_optimize`);
        ``edits.equalize`` applies exact cross-layer equalization (:mod:`workbench.recipes.equalize_keras`);
        ``edits.split_channels`` then splits convolutions by channel range
        (:mod:`workbench.recipes.split_channels_keras`), in finer parts with ``edits.split_fine``. No edit
        here learns from images (``calib`` unused).
        """
        from workbench.exported import EXPORT_META, ExportResult
        from workbench.offline import import_tensorflow

        if not normalize:
            raise WorkbenchError(
                "ST's SSD exports its decoded boxes only (no pixel-output form)", path=weights
            )
        self.check_edits(edits, weights)
        equalize, split_channels = edits.equalize, edits.split_channels
        weights = self.weights_for(weights, imgsz)
        check_weights(weights)  # before anything reads the user's files
        config = self.config_for(weights)
        started = time.perf_counter()
        model = load_ssd(weights, config)
        if edits.st_optimize:
            from workbench.recipes.st_optimize import st_optimize_keras_model

            st_optimize_keras_model(model)
        if equalize:
            from workbench.recipes.equalize_keras import equalize_keras_model

            equalize_keras_model(model)
        if split_channels:
            from workbench.recipes.split_channels_keras import FINE_GROUPS, split_keras_model

            fine = {"groups": FINE_GROUPS, "narrow": "sum"} if edits.split_fine else {}
            split_keras_model(model, min_gain=float(split_channels), **fine)
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
            st_optimized=edits.st_optimize,
            split_channels=split_channels,
            split_fine=edits.split_fine,
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

    # ---- evaluation (workbench.families.ssd_eval) ---------------------------------------------
    st_eval_iou = 0.4  # ST's SSD card: AP at IoU 0.4
    weights_suffixes = (".h5",)

    def evaluation_runner(self, weights: str | Path) -> EvalRunner:
        from workbench.families.ssd_eval import KerasSsdRunner

        return KerasSsdRunner(
            weights,
            load=load_ssd,
            config_for=self.config_for,
            decoder=self.decoder,
            st_eval_iou=self.st_eval_iou,
        )

    def claims_outputs(self, outputs: list[np.ndarray], input_hw: tuple[int, int]) -> bool:
        from workbench.decode.ssd import is_ssd_layout

        return is_ssd_layout(outputs)

    def default_preprocess(self, protocol: str) -> str:
        """Resize under every protocol: ST's SSD scripts ``cv2.resize`` without keeping the aspect ratio."""
        return "resize"

    def output_classes(
        self, outputs: list[np.ndarray], metadata: dict[str, Any], task: Task, input_hw: tuple[int, int]
    ) -> int:
        from workbench.families.ssd_eval import ssd_classes

        return ssd_classes(outputs, metadata, task, input_hw)
