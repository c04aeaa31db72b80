"""`python -m export SRC --out BUNDLE` (also `edge-embed export`)."""
from __future__ import annotations

import argparse
import sys

from edge_embed.errors import EdgeEmbedError
from export import INT8_SCHEMES, MOE_MODES


def parser(prog: str = "python -m export") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Export a Hugging Face checkpoint (nomic-embed-text-v1.5, v2-moe or a BERT "
        "encoder) to an edge-embed bundle: fp32 + int8 ONNX, tokenizer, manifest, validation.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="local Hugging Face model directory, or a hub model id (downloaded)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--moe", choices=MOE_MODES,
                   help="MoE graph form, v2-moe only (default: sparse)")
    p.add_argument("--max-length", type=int, help="max tokens per text (default: from the checkpoint)")
    p.add_argument("--min-dim", type=int, help="smallest Matryoshka dim allowed (default: per family)")
    p.add_argument("--rotary-scaling-factor", type=float,
                   help="dynamic NTK factor for texts past max_trained_positions; default: config.json's, "
                   "and 2 for v1.5 (its model card's long-context setting; no change at or below 2048 tokens)")
    p.add_argument("--no-rotary-scaling", action="store_true",
                   help="v1.5: leave out the default factor 2 (longer texts then run with unscaled positions, "
                   "as the checkpoint's config.json says)")
    p.add_argument("--revision", help="hub revision when SRC is a model id")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 model")
    p.add_argument("--int8-scheme", choices=INT8_SCHEMES, default="auto",
                   help="auto (default): static for dense models, dynamic for MoE ones. static: activation ranges "
                   "calibrated on the shipped texts (NNCF), a text gets the same vector in any batch, at the dynamic "
                   "scheme's speed or better on onnxruntime; dynamic: activations quantized per batch; both: the "
                   "int8 model and, for dense models, a static QDQ one that providers='openvino' runs as int8; "
                   "blockwise: about half the speed, closer to fp32")
    p.add_argument("--int8-min-cosine", type=float, default=0.98,
                   help="validation gate: int8's min cosine to fp32 over the validation texts (default 0.98)")
    p.add_argument("--int8-on-failure", choices=("error", "omit"), default="error",
                   help="when int8 misses the gate: error (default, no bundle written) or omit (the bundle is "
                   "written without int8, with a warning)")
    p.add_argument("--fp16", action="store_true", help="also write an fp16 model (for CUDA; auto picks it on GPU)")
    p.add_argument("--no-validate", action="store_true", help="skip the parity check (not recommended)")


def run(args: argparse.Namespace) -> int:
    try:
        from export.pipeline import ExportOptions, export_bundle
    except ImportError as exc:
        print(f"error: export needs the export extra: pip install 'edge-embed[export]' ({exc})", file=sys.stderr)
        return 1

    options = ExportOptions(
        moe=args.moe, max_length=args.max_length, min_dim=args.min_dim,
        rotary_scaling_factor=args.rotary_scaling_factor, rotary_scaling_default=not args.no_rotary_scaling,
        int8=not args.no_int8, int8_scheme=args.int8_scheme,
        fp16=args.fp16,
        validate=not args.no_validate, revision=args.revision,
        int8_min_cosine=args.int8_min_cosine, int8_on_failure=args.int8_on_failure,
    )
    try:
        export_bundle(args.src, args.out, options)
    except EdgeEmbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted before the export finished; run it again", file=sys.stderr)
        return 130
    print(f"bundle written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))
