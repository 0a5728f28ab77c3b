"""Loading ST's SSD ``.h5`` with tf_keras and checking it is an SSD (used by the family's export and
by fine-tuning, :mod:`.ssd_train`, so neither imports the other)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError
from workbench.safeload import check_weights

if TYPE_CHECKING:
    from workbench.families.st_config import StSsdConfig


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
