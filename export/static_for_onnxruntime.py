"""Static int8 QDQ model -> the same ranges in onnxruntime's integer operators.

onnxruntime runs NNCF's QDQ model (export/static_int8.py) at about its fp32 speed: it does not fuse
that graph's QuantizeLinear -> DequantizeLinear -> MatMul <- DequantizeLinear(weight) pattern (s8
activations behind SmoothQuant's Mul nodes). Written out as what that fusion would give, each weight
MatMul becomes

    QuantizeLinear(x, scale, zero point) -> u8  ->  com.microsoft.MatMulIntegerToFloat(u8, s8 weight,
                                                    scales, zero points[, bias]) -> float

the kernel the dynamic scheme runs, with the activation's range fixed at export instead of measured
per batch. So a text's vector does not depend on its batch-mates (int32 sums are exact; each row is
quantized with the same scale whatever else is in the batch), at the dynamic scheme's speed.
- Activations s8 -> u8 with the zero point + 128: the same integer grid, and onnxruntime's fast
  u8 x s8 kernels (s8 x s8 runs at under a tenth of their speed on x86).
- Weights stay NNCF's 8-bit per-column ones. Requantized to 7 bits, as the dynamic scheme's are for
  AVX2 (export/quantize.py), all-MiniLM-L6-v2's worst validation text fell from 0.988 to 0.973 against
  fp32. On x86 CPUs without VNNI, where u8 x s8 kernels add pairs of products in int16, the runtime
  halves the activations' range instead (edge_embed/int8_saturation.py; activation_quantizers() lists
  what it changes).
- The embedding table: NNCF dequantizes all of it, then gathers the rows (14 ms a call on v1.5,
  the time of a 12-token text's whole forward); here the int8 rows and their scales are gathered first.
Every other node (the float parts) stays as NNCF wrote it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


def integer_operators(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every MatMul of a quantized activation and a quantized constant weight; returns the model."""
    graph = model.graph
    inits, producer, consumers = _graph_maps(graph)
    dropped, added_inits, u8_quantizers = set(), [], {}
    replacement = {}  # id(MatMul node) -> its MatMulIntegerToFloat
    for node in graph.node:
        parts = _quantized_matmul(node, producer, inits)
        if parts is None:
            continue
        act_dq, quantizer, weight_dq = parts
        if quantizer.output[0] not in u8_quantizers:
            u8_quantizers[quantizer.output[0]] = _u8_quantizer(quantizer, inits, added_inits)
        u8_out, act_scale, act_zero = u8_quantizers[quantizer.output[0]]
        weight, weight_scale = weight_dq.input[0], weight_dq.input[1]
        weight_zero = weight_dq.input[2] if len(weight_dq.input) > 2 and weight_dq.input[2] else ""
        if weight_zero and not np.any(numpy_helper.to_array(inits[weight_zero])):
            weight_zero = ""  # symmetric: the kernel's faster path
        inputs = [u8_out, weight, act_scale, weight_scale, act_zero]
        output = node.output[0]
        bias_add = _bias_add(output, consumers, inits, int(inits[weight_dq.input[0]].dims[1]))
        if bias_add is not None:
            bias = next(name for name in bias_add.input if name in inits)
            inputs += [weight_zero, bias]
            output = bias_add.output[0]
            dropped.add(id(bias_add))
        elif weight_zero:
            inputs.append(weight_zero)
        replacement[id(node)] = helper.make_node(
            "MatMulIntegerToFloat", inputs, [output], name=f"{node.name}_int8", domain=MS_DOMAIN)
        dropped.update({id(act_dq), id(weight_dq)})

    for node in graph.node:
        table = _gathered_table(node, producer, inits)
        if table is not None:
            replacement[id(node)] = _gather_then_dequantize(node, table, inits, added_inits)
            dropped.add(id(table))

    # a DequantizeLinear (or NNCF's quantizer) that also feeds a node left as it was stays too
    gone = dropped | set(replacement)
    for node in graph.node:
        if (node.op_type == "DequantizeLinear" and id(node) in dropped
                and any(id(user) not in gone for user in consumers[node.output[0]])):
            dropped.discard(id(node))
    gone = dropped | set(replacement)
    nodes = []
    for node in graph.node:
        if id(node) in replacement and isinstance(replacement[id(node)], list):
            nodes.extend(replacement[id(node)])
        elif id(node) in replacement:
            nodes.append(replacement[id(node)])
        elif node.op_type == "QuantizeLinear" and node.output[0] in u8_quantizers:
            nodes.append(_rewired(node, u8_quantizers[node.output[0]]))
            if any(id(user) not in gone for user in consumers[node.output[0]]):
                nodes.append(node)
        elif id(node) not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added_inits)
    fold_smoothing(graph)
    _drop_unused_initializers(graph)  # (the replaced weights' DequantizeLinear inputs, folded scales)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def activation_quantizers(model: onnx.ModelProto) -> list[list]:
    """[scale name, scale, zero point name, zero point] of each activation quantizer that feeds an integer
    MatMul: what the runtime rescales to 7 bits on CPUs without VNNI (edge_embed/int8_saturation.py)."""
    inits = {t.name: t for t in model.graph.initializer}
    integer_inputs = {node.input[0] for node in model.graph.node if node.op_type == "MatMulIntegerToFloat"}
    found = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.output[0] in integer_inputs:
            scale, zero = node.input[1], node.input[2]
            found.append([scale, float(numpy_helper.to_array(inits[scale])),
                          zero, int(numpy_helper.to_array(inits[zero]))])
    return found


def fold_smoothing(graph: onnx.GraphProto) -> int:
    """SmoothQuant's per-channel Mul in front of a quantizer, folded into the column scales of the integer
    MatMul it scales linearly: the up projection of a gated MLP (y = up * act(gate), scaled y = (up * m) *
    act(gate)) and the value projection of MultiHeadAttention (each output channel is a weighted sum of
    that channel of v). One pass over the activation less per fold (v1.5: 24 of 48, the largest among
    them 2048 x 3072 floats a layer). Returns the number folded."""
    inits, producer, consumers = _graph_maps(graph)
    folded = []
    for node in graph.node:
        vector = _channel_vector(node, inits)
        if vector is None:
            continue
        source = node.input[0] if node.input[1] == vector else node.input[1]
        matmul = _linear_source(source, producer, consumers)
        if matmul is None or len(consumers[source]) != 1:
            continue
        factor = numpy_helper.to_array(inits[vector]).astype(np.float32).reshape(-1)
        for slot in (3, 6):  # b_scale, bias
            if len(matmul.input) > slot and matmul.input[slot]:
                value = numpy_helper.to_array(inits[matmul.input[slot]]).astype(np.float32) * factor
                name = f"{matmul.input[slot]}_smoothed"
                graph.initializer.append(numpy_helper.from_array(value, name))
                matmul.input[slot] = name
        for user in consumers[node.output[0]]:
            user.input[:] = [source if name == node.output[0] else name for name in user.input]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    return len(folded)


def _channel_vector(node, inits):
    """The constant per-channel input of a two-input Mul (shape [..., 1, C]), or None."""
    if node.op_type != "Mul":
        return None
    constant = [name for name in node.input if name in inits and inits[name].dims
                and all(d == 1 for d in inits[name].dims[:-1])]
    return constant[0] if len(constant) == 1 and len(node.input) == 2 else None


def _linear_source(name, producer, consumers):
    """The MatMulIntegerToFloat whose column scales scale `name` channel by channel, or None."""
    node = producer.get(name)
    if node is None:
        return None
    if node.op_type == "MultiHeadAttention" and len(node.input) > 2:
        candidates = [node.input[2]]  # v
    elif node.op_type == "Mul":
        candidates = list(node.input)  # up * act(gate): the factor that comes straight from a MatMul
    else:
        return None
    for candidate in candidates:
        matmul = producer.get(candidate)
        if (matmul is not None and matmul.op_type == "MatMulIntegerToFloat" and len(consumers[candidate]) == 1
                and len(matmul.input) > 3):
            return matmul
    return None


def _graph_maps(graph: onnx.GraphProto):
    """(initializers by name, the node producing each tensor, the nodes reading each tensor)."""
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return inits, producer, consumers


def _quantized_matmul(node, producer, inits):
    """(activation DequantizeLinear, its QuantizeLinear, weight DequantizeLinear) or None."""
    if node.op_type != "MatMul":
        return None
    act_dq, weight_dq = (producer.get(name) for name in node.input)
    if not (act_dq and weight_dq and act_dq.op_type == weight_dq.op_type == "DequantizeLinear"):
        return None
    quantizer = producer.get(act_dq.input[0])
    weight = inits.get(weight_dq.input[0])
    if quantizer is None or quantizer.op_type != "QuantizeLinear" or weight is None or len(weight.dims) != 2:
        return None
    if any(name not in inits for name in act_dq.input[1:]) or any(name not in inits for name in weight_dq.input[1:]):
        return None
    if numpy_helper.to_array(inits[act_dq.input[1]]).size != 1:
        return None  # per-tensor activation ranges only
    axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
    if numpy_helper.to_array(inits[weight_dq.input[1]]).size != 1 and axis not in (1, -1):
        return None  # per-column (or per-tensor) weight scales only
    return act_dq, quantizer, weight_dq


def _u8_quantizer(quantizer, inits, added):
    """(u8 output name, scale, u8 zero point) for the activation quantizer `quantizer`."""
    scale = quantizer.input[1]
    zero = numpy_helper.to_array(inits[quantizer.input[2]]).astype(np.int32)
    if inits[quantizer.input[2]].data_type == onnx.TensorProto.INT8:
        zero = zero + 128
    zero_name = f"{quantizer.output[0]}_u8_zero"
    added.append(numpy_helper.from_array(zero.astype(np.uint8), zero_name))
    return f"{quantizer.output[0]}_u8", scale, zero_name


def _rewired(quantizer, u8):
    out, scale, zero = u8
    return helper.make_node("QuantizeLinear", [quantizer.input[0], scale, zero], [out], name=quantizer.name)


def _bias_add(output, consumers, inits, columns):
    """The Add of a [columns] constant that is the MatMul's only consumer, or None."""
    users = consumers.get(output, [])
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    constant = [name for name in add.input if name in inits]
    if len(constant) != 1 or list(inits[constant[0]].dims) != [columns]:
        return None
    return add


def _gathered_table(node, producer, inits):
    """The DequantizeLinear of a constant per-row int8 table that this Gather (axis 0) reads, or None."""
    if node.op_type != "Gather" or any(a.name == "axis" and a.i != 0 for a in node.attribute):
        return None
    dq = producer.get(node.input[0])
    if dq is None or dq.op_type != "DequantizeLinear" or any(name not in inits for name in dq.input):
        return None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    table = inits[dq.input[0]]
    return dq if len(table.dims) == 2 and axis == 0 and len(dq.input) == 3 else None


def _gather_then_dequantize(gather, dq, inits, added):
    """Gather the int8 rows and their scales and zero points, then dequantize only those rows."""
    name, ids, out = dq.input[0], gather.input[1], gather.output[0]
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32).reshape(-1, 1)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32).reshape(-1, 1)
    added.append(numpy_helper.from_array(scale, f"{name}_row_scale"))
    nodes = [helper.make_node("Gather", [name, ids], [f"{out}_q"], name=f"{gather.name}_q"),
             helper.make_node("Cast", [f"{out}_q"], [f"{out}_qf"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Gather", [f"{name}_row_scale", ids], [f"{out}_scale"])]
    rows = f"{out}_qf"
    if np.any(zero):
        added.append(numpy_helper.from_array(zero, f"{name}_row_zero"))
        nodes += [helper.make_node("Gather", [f"{name}_row_zero", ids], [f"{out}_zero"]),
                  helper.make_node("Sub", [rows, f"{out}_zero"], [f"{out}_centred"])]
        rows = f"{out}_centred"
    nodes.append(helper.make_node("Mul", [rows, f"{out}_scale"], [out], name=f"{gather.name}_dequantized"))
    return nodes
