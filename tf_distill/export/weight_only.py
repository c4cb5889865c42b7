"""Int8 weight-only quantization of a float LiteRT flatbuffer.

The TFLite converter's `Optimize.DEFAULT` without calibration data gives
*dynamic-range* quantization: int8 weights, and activations quantized on the
fly for the matrix products (hybrid kernels). Weight-only quantization keeps
all arithmetic in float32 and only stores the weights as int8: each large
constant becomes an int8 tensor with one symmetric scale per row (axis 0)
and a `DEQUANTIZE` operator that restores the float32 tensor at run time.
The file is about 4× smaller; the numbers differ from float32 only by the
rounding of the weights, not of the activations. The converter has no
public switch for this, so it is done here on the converted flatbuffer with
TensorFlow's own schema (`tensorflow.lite.tools.flatbuffer_utils`).
"""

import numpy as np

# Constants smaller than this stay float32, like the converter's dynamic-range
# threshold: biases and layer-norm scales cost little and are sensitive.
MIN_ELEMENTS = 1024

_INT8_LIMIT = 127


def quantize_weights_int8(litert_model, min_elements=MIN_ELEMENTS):
    """Stores the float32 constants of a LiteRT model as int8, computes in float32.

    Args:
        litert_model: The `.tflite` flatbuffer, as bytes.
        min_elements: Constants with fewer elements (and every constant of
            rank < 2) are kept in float32.

    Returns:
        `(litert_model, quantized)`: the new flatbuffer bytes and the number
        of tensors quantized.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(litert_model))
    dequantize = _opcode_index(model, schema.BuiltinOperator.DEQUANTIZE, schema)
    quantized = 0
    for subgraph in model.subgraphs:
        uses = {}
        for tensor in subgraph.tensors:
            uses[tensor.buffer] = uses.get(tensor.buffer, 0) + 1
        dequantize_ops = []
        for index in range(len(subgraph.tensors)):
            tensor = subgraph.tensors[index]
            values = _float_constant(model, tensor, schema)
            # A buffer shared by several tensors (deduplicated constants)
            # is left alone: clearing it would empty the other tensors.
            if values is None or uses[tensor.buffer] != 1:
                continue
            if values.ndim < 2 or values.size < min_elements:
                continue
            rows = values.reshape(values.shape[0], -1)
            scales = np.max(np.abs(rows), axis=1) / _INT8_LIMIT
            scales[scales == 0] = 1.0
            broadcast = scales.reshape((-1,) + (1,) * (values.ndim - 1))
            weights = np.clip(np.round(values / broadcast), -_INT8_LIMIT, _INT8_LIMIT)
            int8_buffer = schema.BufferT()
            int8_buffer.data = np.frombuffer(weights.astype(np.int8).tobytes(), np.uint8)
            model.buffers.append(int8_buffer)
            int8_tensor = schema.TensorT()
            int8_tensor.name = (tensor.name or b"weight") + b"_int8"
            int8_tensor.shape = np.array(values.shape, np.int32)
            int8_tensor.type = schema.TensorType.INT8
            int8_tensor.buffer = len(model.buffers) - 1
            int8_tensor.quantization = schema.QuantizationParametersT()
            int8_tensor.quantization.scale = scales.astype(np.float32).tolist()
            int8_tensor.quantization.zeroPoint = [0] * len(scales)
            int8_tensor.quantization.quantizedDimension = 0
            subgraph.tensors.append(int8_tensor)
            # The float tensor is now computed, not stored: its buffer empties.
            model.buffers[tensor.buffer].data = None
            tensor.buffer = 0
            operator = schema.OperatorT()
            operator.opcodeIndex = dequantize
            operator.inputs = np.array([len(subgraph.tensors) - 1], np.int32)
            operator.outputs = np.array([index], np.int32)
            dequantize_ops.append(operator)
            quantized += 1
        # Dequantizing depends on nothing: it runs first, once per call.
        subgraph.operators = dequantize_ops + list(subgraph.operators or [])
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), quantized


def _opcode_index(model, builtin, schema):
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(
        builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    )
    # Version 2 of DEQUANTIZE reads int8 inputs (version 1 only uint8).
    code.version = 2
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_constant(model, tensor, schema):
    """The tensor's float32 values if it is a stored constant, else `None`."""
    if tensor.type != schema.TensorType.FLOAT32 or tensor.isVariable:
        return None
    if not tensor.buffer or tensor.buffer >= len(model.buffers):
        return None
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0:
        return None
    shape = [int(size) for size in (tensor.shape if tensor.shape is not None else [])]
    values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32)
    if values.size != int(np.prod(shape)):
        return None
    return values.reshape(shape)
