"""Many rows at once through a graph exported with its batch axis fixed at 1 (stateful streaming denoisers such as
DTLN are), so a stateful per-frame stage costs one call per frame for all of a user's chunks instead of one per
frame per chunk.

``rows_session`` rewrites a copy of the graph in memory (the file is not touched): the batch axis of every input and
output becomes symbolic, and every Reshape whose target shape is a constant leading with that batch of 1 gets −1
there instead. Exported graphs often hide other batch-1 assumptions, so the rewrite is only *used* after a check: on
random inputs and states, two rows in one call must give what two calls of the original graph give (to 1e-4,
relative). A graph that fails the rewrite or the check keeps its row-by-row streaming; the outputs are the same
either way, only the time differs (``benchmarks/onnx_batching.py`` measures it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpse.models.onnx_teacher import _DTYPES

TOLERANCE = 1e-4


def _relaxed_model(path: Path):
    """The graph with a symbolic batch axis and batch-free constant reshapes, or ``None`` (no ``onnx`` package, or
    nothing that could be rewritten)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    model = onnx.load(str(path))
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or not (dims[0].HasField("dim_value") and dims[0].dim_value == 1):
            continue
        dims[0].Clear()
        dims[0].dim_param = "rows"
    del graph.value_info[:]  # inferred shapes of the batch-1 graph would contradict the new axis
    shapes = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        src = node.input[1]
        tensor = shapes.get(src)
        if tensor is None and src in constants:
            tensor = next((a.t for a in constants[src].attribute if a.name == "value"), None)
        if tensor is None:
            continue  # a computed shape follows the data's own batch
        target = numpy_helper.to_array(tensor).copy()
        if target.ndim == 1 and target.size > 1 and target[0] == 1 and -1 not in target:
            target[0] = -1
            tensor.CopyFrom(numpy_helper.from_array(target, tensor.name))
    return model


def _feed(args, rows: int, rng: np.random.Generator) -> dict:
    feed = {}
    for arg in args:
        shape = [rows if k == 0 else (d if isinstance(d, int) else 1) for k, d in enumerate(arg.shape)]
        feed[arg.name] = (0.1 * rng.standard_normal(shape)).astype(_DTYPES.get(arg.type, np.float32))
    return feed


def rows_session(path: Path, session, num_threads: int = 1):
    """A session of ``path``'s graph that takes several rows at once and agrees with ``session`` row by row, or
    ``None`` where the graph cannot be made to."""
    import onnxruntime as ort

    model = _relaxed_model(path)
    if model is None:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # a failing check is expected for some graphs: no console noise
    try:
        relaxed = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = _feed(session.get_inputs(), 2, np.random.default_rng(0))
        together = relaxed.run(None, feed)
        alone = [session.run(None, {k: v[r : r + 1] for k, v in feed.items()}) for r in range(2)]
    except Exception:  # onnxruntime's own exception types: the rewrite does not hold for this graph
        return None
    for k, out in enumerate(together):
        expected = np.concatenate([a[k] for a in alone])
        if out.shape != expected.shape:
            return None
        scale = 1.0 + np.abs(expected)
        if not np.all(np.abs(out.astype(np.float64) - expected) <= TOLERANCE * scale):
            return None
    return relaxed
