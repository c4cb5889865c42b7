"""What a `.tflite` flatbuffer holds, read from its bytes without running it."""


def tf_ops_in(litert_model):
    """The TensorFlow (Flex) ops a `.tflite` flatbuffer calls, as `tf.NAME`."""
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = schema.Model.GetRootAs(litert_model, 0)
    ops = []
    for index in range(flatbuffer.OperatorCodesLength()):
        custom_code = flatbuffer.OperatorCodes(index).CustomCode()
        if custom_code:
            name = custom_code.decode("utf-8", "replace")
            # The converter names them Flex<TensorFlow op>.
            if name.startswith("Flex") and f"tf.{name[4:]}" not in ops:
                ops.append(f"tf.{name[4:]}")
    return ops


def per_channel_tensors(litert_model):
    """Names of the tensors of a `.tflite` flatbuffer with several scales."""
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = schema.Model.GetRootAs(litert_model, 0)
    names = []
    for subgraph_index in range(flatbuffer.SubgraphsLength()):
        subgraph = flatbuffer.Subgraphs(subgraph_index)
        for index in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(index)
            quantization = tensor.Quantization()
            if quantization is not None and quantization.ScaleLength() > 1:
                names.append(tensor.Name().decode("utf-8", "replace"))
    return names
