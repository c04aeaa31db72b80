"""Loaded (through PYTHONPATH) by the peer server processes bench/infinity_peer.py starts: every ONNX
Runtime session they make gets EDGE_BENCH_ORT_THREADS intra-op threads and one inter-op thread, the
same as `edge-embed serve --threads N`; infinity has no flag for it."""
import os

_threads = os.environ.get("EDGE_BENCH_ORT_THREADS")
if _threads:
    import onnxruntime

    _init = onnxruntime.InferenceSession.__init__

    def _limited_init(self, path_or_bytes, sess_options=None, *args, **kwargs):
        options = sess_options or onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(_threads)
        options.inter_op_num_threads = 1
        _init(self, path_or_bytes, options, *args, **kwargs)

    onnxruntime.InferenceSession.__init__ = _limited_init
