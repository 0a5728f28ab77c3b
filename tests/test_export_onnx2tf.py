"""Export skips onnx2tf's own .tflite conversions, and only while it exports."""

from __future__ import annotations

import numpy as np

from workbench.export import _no_onnx2tf_tflite
from workbench.offline import import_tensorflow


def test_onnx2tf_converts_nothing_during_export_and_tf_converts_after():
    tf = import_tensorflow()
    original = tf.lite.TFLiteConverter.__dict__["from_concrete_functions"]

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def double(x):
        return x * 2.0

    function = double.get_concrete_function()
    with _no_onnx2tf_tflite():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
        # the options onnx2tf sets before each of its two conversions
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.unfold_batchmatmul = True
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        assert converter.convert() == b""
    assert tf.lite.TFLiteConverter.__dict__["from_concrete_functions"] is original
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([function], double).convert()
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ones((1, 4), np.float32))
    interpreter.invoke()
    assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).tolist() == [[2.0] * 4]
