"""The export pipeline: checkpoint -> torch model -> fp32 ONNX -> int8 ONNX -> validated bundle."""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
import onnxruntime
import torch

import edge_embed
from edge_embed.errors import InputError
from edge_embed.manifest import (
    INTEGER_OPERATORS,
    STATIC_INT8_MODEL,
    TOKENIZER_FILE,
    Manifest,
    Matryoshka,
    check_model_references,
    sha256_file,
    write_manifest,
)
from edge_embed.unigram import LEAN_TOKENIZER_FILE
from export import INT8_SCHEMES, MOE_MODES, families
from export.bundle_dir import install_bundle, prepare_output, staging_prefix
from export.checkpoint import CheckpointError, load_state_dict, read_config, resolve_source
from export.fp16 import convert_fp16
from export.lean_tokenizer import write_lean_tokenizer
from export.memory_check import check_fits
from export.moe_fused import QMOE_MIN_ONNXRUNTIME
from export.nomic_bert import rotary_base
from export.onnx_export import INPUTS, OUTPUT, export_fp32
from export.quantize import quantize_int8
from export.static_int8 import quantize_static_int8
from export.validate import INT8_MIN_COSINE, ValidationError, validate_bundle


@dataclass
class ExportOptions:
    moe: str | None = None  # MoE checkpoints only; None: "sparse"
    max_length: int | None = None
    min_dim: int | None = None
    rotary_scaling_factor: float | None = None  # None: config.json's, or v1.5's default (families.py)
    rotary_scaling_default: bool = True  # False: no default factor for v1.5 (as its config.json says)
    int8: bool = True
    int8_scheme: str = "auto"  # or "dynamic", "blockwise", "static", "both" (static, plus its QDQ form for OpenVINO)
    fp16: bool = False  # for GPU bundles
    validate: bool = True
    revision: str | None = None
    int8_min_cosine: float = INT8_MIN_COSINE  # int8's worst validation text against fp32
    int8_on_failure: str = "error"  # or "omit": write the bundle without int8, with a warning


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_tokenizer(src: Path, embedding_rows: int):
    """The checkpoint's tokenizers.Tokenizer. It must exist and fit the embedding table: an id
    past its end would fail inside onnxruntime, and only on the texts that produce it."""
    from tokenizers import Tokenizer

    path = src / TOKENIZER_FILE
    if not path.exists():
        raise CheckpointError(f"{src} has no {TOKENIZER_FILE}; save the fast tokenizer there first")
    tokenizer = Tokenizer.from_file(str(path))
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > embedding_rows:
        raise CheckpointError(f"{TOKENIZER_FILE} has {size} tokens but the model's embedding table has "
                              f"{embedding_rows} rows: the tokenizer belongs to another model")
    return tokenizer


def copy_tokenizer(src: Path, out: Path) -> None:
    path = src / TOKENIZER_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["padding"] = None  # the runtime pads and truncates itself
    data["truncation"] = None
    (out / TOKENIZER_FILE).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def pad_token_id(config: dict, tokenizer) -> int:
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return int(config.get("pad_token_id") or 0)


def check_options(options: ExportOptions, family: families.Family, config: dict) -> None:
    """Options a bundle could be written with but never used with are refused up front."""
    hidden = families.hidden_size(config)
    if options.moe is not None:
        if options.moe not in MOE_MODES:
            raise InputError(f"moe must be one of {MOE_MODES}, not {options.moe!r}")
        if family is not families.V2_MOE:
            raise InputError(f"the MoE graph form applies to MoE checkpoints (v2-moe) only; this is a "
                             f"{family.name} checkpoint: leave --moe out")
    if not 0 <= options.int8_min_cosine <= 1:
        raise InputError(f"int8 min cosine must be from 0 to 1, not {options.int8_min_cosine}")
    if options.int8_on_failure not in ("error", "omit"):
        raise InputError(f"int8_on_failure must be 'error' or 'omit', not {options.int8_on_failure!r}")
    if options.int8_scheme not in INT8_SCHEMES:
        raise InputError(f"int8_scheme must be one of {INT8_SCHEMES}, not {options.int8_scheme!r}")
    if options.int8_scheme == "static" and options.int8 and family is families.V2_MOE:
        raise InputError("the static int8 scheme is not available for MoE checkpoints: NNCF 3.4 cannot calibrate "
                         "the sparse MoE graph (its SmoothQuant finds no static shape for an expert MatMul; "
                         "without it, experts that no calibration token reaches get no ranges); "
                         "use --int8-scheme dynamic (the default)")
    if options.min_dim is not None and not 1 <= options.min_dim <= hidden:
        raise InputError(f"min dim must be from 1 to the model's width {hidden}, not {options.min_dim}")
    if options.max_length is not None:
        positions = config.get("max_position_embeddings") if family is families.BERT else None
        if options.max_length < 8 or (positions and options.max_length > positions):
            limit = f" to its {positions} positions" if positions else ""
            raise InputError(f"max length must be at least 8{limit}, not {options.max_length}")
    if options.rotary_scaling_factor is not None:
        if family is families.BERT:
            raise InputError("the rotary scaling factor applies to nomic models only; this is a BERT checkpoint")
        if not options.rotary_scaling_factor > 0:
            raise InputError(f"rotary scaling factor must be positive (the v1.5 card uses 2), "
                             f"not {options.rotary_scaling_factor}")
        if not options.rotary_scaling_default:
            raise InputError("give either a rotary scaling factor or no rotary scaling, not both")


def export_bundle(src: str, out: Path, options: ExportOptions | None = None) -> dict:
    """Export SRC (local HF directory or hub id) to the bundle directory OUT; returns the report."""
    options = options or ExportOptions()
    source = resolve_source(src, options.revision)
    config = read_config(source)
    family = families.detect_family(config)
    check_fits(config)  # before any weight is read
    check_options(options, family, config)
    default = families.default_rotary_scaling(family, config) if options.rotary_scaling_default else None
    if options.rotary_scaling_factor is not None:
        config = {**config, "rotary_scaling_factor": options.rotary_scaling_factor}
        config["rotary_scaling_source"] = "the export option"
    elif default is not None:
        config = {**config, "rotary_scaling_factor": default}
        config["rotary_scaling_source"] = ("edge-embed's v1.5 default (the model card's long-context setting; "
                                           "export with --no-rotary-scaling to leave it out)")
    elif config.get("rotary_scaling_factor") is not None:
        config = {**config, "rotary_scaling_source": "config.json"}
    auto = options.int8_scheme == "auto"
    options = replace(options, moe=options.moe or "sparse", int8_scheme=int8_scheme(options, family))
    pooling = families.pooling(source)
    out = Path(out)
    created = prepare_output(out)
    try:
        return _export(src, source, out, config, family, options, pooling,
                       static_fallback=auto and options.int8_scheme == "static")
    except BaseException:  # also Ctrl-C: no empty directory left where none was
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def _export(src: str, source: Path, out: Path, config: dict, family: families.Family, options: ExportOptions,
            pooling: str, static_fallback: bool = False) -> dict:
    """static_fallback: a static int8 model under the gate is replaced by a dynamic one (the auto scheme)."""
    log(f"[export] {source} -> {out} ({family.name})")
    model = family.build(config, load_state_dict(source), options.moe)
    pad_id = pad_token_id(config, check_tokenizer(source, _vocab_size(model)))
    with tempfile.TemporaryDirectory(dir=out, prefix=staging_prefix()) as tmp:
        staging = Path(tmp)
        copy_tokenizer(source, staging)
        if write_lean_tokenizer(staging / TOKENIZER_FILE, staging / LEAN_TOKENIZER_FILE):
            log(f"[export] {LEAN_TOKENIZER_FILE} written (the runtime's lean Unigram tokenizer)")
        models = {"fp32": export_fp32(model, staging / "model.fp32.onnx", _vocab_size(model))}
        log(f"[export] fp32 ONNX written ({_megabytes(staging, models['fp32'])} MB)")
        int8_section = None
        if options.int8:
            int8_models, int8_section = _int8_models(staging, family, options, source, config)
            models.update(int8_models)
        if options.fp16:
            models["fp16"] = convert_fp16(staging / "model.fp32.onnx", staging / "model.fp16.onnx")
            log(f"[export] fp16 ONNX written ({_megabytes(staging, models['fp16'])} MB)")

        def manifest_of_models() -> Manifest:  # (re)written whenever the models change
            written = _manifest(family, config, source, source_record(src, source, options.revision), staging,
                                models, options, pad_id, pooling, int8_section)
            for precision in models:  # the runtime's own containment check, on what was written
                check_model_references(staging, written, precision)
            write_manifest(staging, written)
            return written

        manifest = manifest_of_models()
        report = (validate_bundle(model, staging, config, source, options.int8_min_cosine) if options.validate
                  else {"skipped": True})
        if report.get("int8_failed") and static_fallback:  # (real weights whose outliers static ranges miss)
            missed = report["int8_failed"]
            log(f"[export] WARNING: static int8 missed the gate ({missed}); writing the dynamic scheme instead")
            for name in models.pop("int8"):
                (staging / name).unlink()
            options = replace(options, int8_scheme="dynamic")
            int8_models, int8_section = _int8_models(staging, family, options, source, config)
            models.update(int8_models)
            manifest = manifest_of_models()
            report = validate_bundle(model, staging, config, source, options.int8_min_cosine)
            report["int8_static_missed"] = missed
        if report.get("failed"):  # nothing is written: a bundle that loads must be a correct one
            raise ValidationError(f"validation failed, no bundle written: {report['failed']}; "
                                  f"figures: {json.dumps(report['precisions'])}")
        if report.get("int8_failed") and options.int8_on_failure != "omit":
            raise ValidationError(f"validation failed, no bundle written: {report['int8_failed']}. Try "
                                  "--int8-scheme blockwise, lower --int8-min-cosine, or pass --int8-on-failure omit "
                                  "to write the bundle without int8")
        # a failed int8 model takes OpenVINO's with it: no bundle has OpenVINO's int8 without onnxruntime's
        failed = (["int8", STATIC_INT8_MODEL] if report.get("int8_failed")
                  else [STATIC_INT8_MODEL] if report.get(f"{STATIC_INT8_MODEL}_failed") else [])
        dropped = [key for key in failed if key in models]
        for key in dropped:
            for name in models.pop(key):
                (staging / name).unlink()
        if dropped:
            manifest = manifest_of_models()
        if report.get("int8_failed"):
            report["int8_omitted"] = report["int8_failed"]
            log(f"[export] WARNING: THE BUNDLE HAS NO INT8 MODEL: {report['int8_failed']}")
        elif STATIC_INT8_MODEL in dropped:  # onnxruntime's int8 serves; OpenVINO then runs fp32 or bf16
            report["int8_static_omitted"] = report["int8_static_failed"]
            log(f"[export] WARNING: no static int8 model for OpenVINO: {report['int8_static_failed']}")
        (staging / "validation.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        install_bundle(staging, out, manifest.files)
    return report


def _int8_models(staging: Path, family, options: ExportOptions, source: Path, config: dict) -> tuple[dict, dict]:
    """The int8 model(s) of the scheme, {"int8": files} and for "both" {STATIC_INT8_MODEL: files}, and the
    manifest's int8 section."""
    scheme = options.int8_scheme
    if scheme == "both" and family is families.V2_MOE:
        log("[export] no static int8 model for MoE checkpoints (NNCF cannot calibrate the sparse MoE graph)")
    elif scheme == "both" and not _nncf_installed():
        log("[export] NNCF is not installed: the dynamic int8 model only (pip install 'edge-embed[export]')")
    if not _static_ranges(family, options):
        scheme = "dynamic" if scheme == "both" else scheme
        models = {"int8": quantize_int8(staging / "model.fp32.onnx", staging / "model.int8.onnx", scheme=scheme)}
        log(f"[export] int8 ONNX written ({_megabytes(staging, models['int8'])} MB)")
        return models, {"scheme": scheme}
    written = quantize_static_int8(
        staging / "model.fp32.onnx", staging / TOKENIZER_FILE, families.prefixes(family, source),
        _max_length(options, config, source), multilingual=family is families.V2_MOE,
        onnxruntime_path=staging / "model.int8.onnx",
        openvino_path=staging / "model.int8.static.onnx" if scheme == "both" else None)
    models = {"int8": written.onnxruntime}
    log(f"[export] static int8 ONNX written ({_megabytes(staging, models['int8'])} MB)")
    if written.openvino:
        models[STATIC_INT8_MODEL] = written.openvino
        log(f"[export] static int8 ONNX for OpenVINO written ({_megabytes(staging, written.openvino)} MB)")
    # form: how the static ranges are written; static bundles from before it have none, and a QDQ
    # model.int8.onnx that OpenVINO runs. weight_bits and activation_quantizers: edge_embed/int8_saturation.py
    section = {"scheme": "static", "form": INTEGER_OPERATORS, "weight_bits": 8,
               "activation_quantizers": written.activation_quantizers}
    return models, section


def int8_scheme(options: ExportOptions, family) -> str:
    """"auto" -> static for dense models (a text's vector does not depend on its batch, at the dynamic
    scheme's speed or better: README), dynamic for MoE checkpoints (NNCF cannot calibrate their sparse
    graph) and where NNCF is not installed; other schemes as given."""
    if options.int8_scheme != "auto" or not options.int8:
        return options.int8_scheme
    if family is families.V2_MOE:
        return "dynamic"
    if not _nncf_installed():
        log("[export] NNCF is not installed: dynamic int8 (pip install 'edge-embed[export]' for the static scheme)")
        return "dynamic"
    return "static"


def _static_ranges(family, options: ExportOptions) -> bool:
    """Whether the int8 model has static ranges: --int8-scheme static, or both where NNCF (the export extra)
    can calibrate (dense models; the dynamic scheme otherwise)."""
    both = options.int8_scheme == "both" and family is not families.V2_MOE and _nncf_installed()
    return options.int8_scheme == "static" or both


def _nncf_installed() -> bool:
    return importlib.util.find_spec("nncf") is not None


def source_record(src: str, source: Path, revision: str | None) -> dict:
    """Where the weights came from, as a stranger may read it: the hub id and revision (the snapshot
    folder's name is the commit), or the checkpoint folder's name; never a path of this machine."""
    if Path(src).is_dir():
        return {"name": Path(src).resolve().name}
    commit = source.name if source.parent.name == "snapshots" else None
    return {"hub_id": src, "revision": revision or commit, **({"commit": commit} if commit else {})}


def _max_length(options: ExportOptions, config: dict, source: Path) -> int:
    return options.max_length if options.max_length is not None else families.max_length(config, source)


def _vocab_size(model: torch.nn.Module) -> int:
    return model.embeddings.word_embeddings.num_embeddings


def _megabytes(folder: Path, names: list[str]) -> int:
    return round(sum((folder / name).stat().st_size for name in names) / 1e6)


def _manifest(family, config, source: Path, record: dict, staging, models, options, pad_id: int,
              pooling: str, int8_section: dict | None) -> Manifest:
    hidden = families.hidden_size(config)
    files = {name: sha256_file(staging / name) for names in models.values() for name in names}
    files[TOKENIZER_FILE] = sha256_file(staging / TOKENIZER_FILE)
    tokenizer = {"source": TOKENIZER_FILE}
    if (staging / LEAN_TOKENIZER_FILE).exists():  # derived from tokenizer.json, which stays the source of truth
        files[LEAN_TOKENIZER_FILE] = sha256_file(staging / LEAN_TOKENIZER_FILE)
        tokenizer["runtime"] = {"kind": "unigram", "file": LEAN_TOKENIZER_FILE}
    extra = {
        "source": {**record, "model_type": config.get("model_type"),
                   "architectures": config.get("architectures")},
        "validation": "validation.json",
        "tokenizer": tokenizer,
        "tools": {"edge_embed": edge_embed.__version__, "torch": torch.__version__,
                  "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }
    if "int8" in models:
        extra["int8"] = int8_section
    if STATIC_INT8_MODEL in models:
        extra[STATIC_INT8_MODEL] = {"scheme": "static", "float_attention": True}
    if family is not families.BERT:
        extra["rotary"] = {
            "base": rotary_base(config),
            "scaling_factor": config.get("rotary_scaling_factor"),
            "scaling_source": config.get("rotary_scaling_source", "none (config.json sets none)"),
            "max_trained_positions": config.get("max_trained_positions"),
            "scaling_rule": "dynamic NTK per text: base*(f*L/Lt-(f-1))**(d/(d-2)) when L > Lt, "
            "L = the text's own length",
        }
    if family is families.V2_MOE:
        extra["moe"] = {"mode": options.moe, "num_experts": config.get("num_experts"),
                        "top_k": config.get("moe_top_k"), "router_precision": "fp32"}
    requires = {}
    if options.moe == "fused" and "int8" in models and family is families.V2_MOE:
        requires["int8"] = {"version": QMOE_MIN_ONNXRUNTIME,
                            "why": "exported with --moe fused, its MoE layers are com.microsoft.QMoE nodes "
                                   "with router_weights; --moe sparse bundles run on any supported onnxruntime"}
    return Manifest(
        family=family.name,
        hidden_size=hidden,
        max_length=_max_length(options, config, source),
        pad_token_id=pad_id,
        prefixes=families.prefixes(family, source),
        matryoshka=Matryoshka(options.min_dim if options.min_dim is not None else families.min_dim(family, config),
                              hidden, family.layer_norm),
        models=models,
        files=files,
        input_names=tuple(INPUTS),
        output_name=OUTPUT,
        pooling=pooling,
        requires_onnxruntime=requires,
        extra=extra,
    )
