"""The bundle manifest (`edge_embed.json`): the one contract between export/ and the runtime.

A bundle is a directory:
    edge_embed.json     this manifest
    tokenizer.json      Hugging Face tokenizers file (padding/truncation off)
    tokenizer.unigram.json  for Unigram vocabularies: the lean tokenizer's file, derived from tokenizer.json
    model.fp32.onnx     and model.int8.onnx (+ model.int8.static.onnx, model.fp16.onnx, external data files)
    validation.json     the export's parity report
Every file is listed with its sha256; the runtime checks the ones it opens.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from edge_embed.errors import BundleError, is_int
from edge_embed.onnx_refs import NotOnnx, external_data_locations
from edge_embed.pooling import POOLINGS

MANIFEST_NAME = "edge_embed.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "edge-embed-bundle"
FORMAT_VERSION = 1
TASKS = ("search_query", "search_document", "clustering", "classification")
# The v2 sentence-transformers prompt names, accepted as aliases.
TASK_ALIASES = {"query": "search_query", "passage": "search_document", "document": "search_document"}
# Bounds no real model comes near; past them a damaged manifest would ask for absurd memory.
MAX_HIDDEN = 1 << 16
MAX_LENGTH = 1 << 20
MAX_TOKEN_ID = (1 << 31) - 1
MODEL_PRECISIONS = ("fp32", "int8", "fp16")
# models' keys: the precisions, and a static int8 model beside a dynamic one (what OpenVINO runs as int8)
STATIC_INT8_MODEL = "int8_static"
# extra.int8.form of static ranges written as onnxruntime's integer operators (no form: a QDQ model)
INTEGER_OPERATORS = "integer_operators"
MODEL_KEYS = (*MODEL_PRECISIONS, STATIC_INT8_MODEL)
MAX_PREFIX = 4096  # characters; the real prefixes have 7 to 20
SHA256 = re.compile(r"[0-9a-f]{64}")


def _field(data: dict, key: str, kind: type, where: str = ""):
    value = data[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(f"{where}{key} is {type(value).__name__}, not {kind.__name__}")
    return value


def _integer(data: dict, key: str, low: int, high: int, where: str = "") -> int:
    value = data[key]
    if not is_int(value) or not low <= value <= high:
        raise ValueError(f"{where}{key} is {value!r:.40}, not an integer from {low} to {high}")
    return int(value)


def _epsilon(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"matryoshka.layer_norm_eps is {value!r:.40}, not a number between 0 and 1")
    return float(value)


def _str_map(data: dict, key: str, valid, default=None) -> dict:
    value = data.get(key, default) if default is not None else data[key]
    if not isinstance(value, dict):
        raise TypeError(f"{key} is {type(value).__name__}, not an object")
    for name, item in value.items():
        if not valid(item):
            raise ValueError(f"{key}[{name!r:.60}] is {item!r:.60}")
    return dict(value)


def _names(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(name, str) for name in value)


def _requirement(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("version"), str) and isinstance(value.get("why", ""), str)


def _reason(exc: Exception) -> str:
    return f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else str(exc)


@dataclass(frozen=True)
class Matryoshka:
    min_dim: int
    max_dim: int
    layer_norm: bool  # v1.5: layer_norm (no affine) before truncation
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class Manifest:
    family: str  # "nomic-embed-text-v1.5", "nomic-embed-text-v2-moe" or "bert"
    hidden_size: int
    max_length: int
    pad_token_id: int
    prefixes: dict[str, str]
    matryoshka: Matryoshka
    models: dict[str, list[str]]  # precision -> [onnx file, external data files...]
    files: dict[str, str]  # relative path -> sha256
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    output_name: str = "last_hidden_state"
    pooling: str = "mean"  # or "cls" (edge_embed.pooling.POOLINGS)
    # precision -> {"version": the oldest onnxruntime that runs that model, "why": ...}, for models
    # that need more than the package's own minimum
    requires_onnxruntime: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # source, rotary, moe, tools: informational

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "hidden_size": self.hidden_size,
            "max_length": self.max_length,
            "pad_token_id": self.pad_token_id,
            "pooling": self.pooling,
            "matryoshka": {
                "min_dim": self.matryoshka.min_dim,
                "max_dim": self.matryoshka.max_dim,
                "recipe": (
                    f"{self.pooling}_pool -> layer_norm(no affine) -> truncate -> l2_normalize"
                    if self.matryoshka.layer_norm
                    else f"{self.pooling}_pool -> truncate -> l2_normalize"
                ),
                "layer_norm": self.matryoshka.layer_norm,
                "layer_norm_eps": self.matryoshka.layer_norm_eps,
            },
            "prefixes": self.prefixes,
            "inputs": list(self.input_names),
            "output": self.output_name,
            "models": self.models,
            "files": self.files,
            **({"requires_onnxruntime": self.requires_onnxruntime} if self.requires_onnxruntime else {}),
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise BundleError(f"{MANIFEST_NAME} is not an edge-embed manifest (format={found!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"bundle format version {version} is not supported by this edge-embed "
                f"(it reads version {FORMAT_VERSION}); re-export the model with this version "
                "or install the edge-embed release that wrote it"
            )
        try:
            mat = _field(data, "matryoshka", dict)
            known = {
                "format", "format_version", "family", "hidden_size", "max_length", "pad_token_id",
                "pooling", "matryoshka", "prefixes", "inputs", "output", "models", "files", "requires_onnxruntime",
            }
            manifest = cls(
                family=_field(data, "family", str),
                hidden_size=_integer(data, "hidden_size", 1, MAX_HIDDEN),
                max_length=_integer(data, "max_length", 8, MAX_LENGTH),
                pad_token_id=_integer(data, "pad_token_id", 0, MAX_TOKEN_ID),
                prefixes=_str_map(data, "prefixes", lambda value: isinstance(value, str)),
                matryoshka=Matryoshka(
                    _integer(mat, "min_dim", 1, MAX_HIDDEN, "matryoshka."),
                    _integer(mat, "max_dim", 1, MAX_HIDDEN, "matryoshka."),
                    _field(mat, "layer_norm", bool, "matryoshka."),
                    _epsilon(mat.get("layer_norm_eps", 1e-5)),
                ),
                models={k: list(v) for k, v in _str_map(data, "models", _names).items()},
                files=_str_map(data, "files", lambda value: isinstance(value, str) and SHA256.fullmatch(value)),
                input_names=tuple(_field(data, "inputs", list)),
                output_name=_field(data, "output", str),
                pooling=data.get("pooling", "mean"),
                requires_onnxruntime={k: {"version": str(v["version"]), "why": str(v.get("why", ""))}
                                      for k, v in _str_map(data, "requires_onnxruntime", _requirement,
                                                           {}).items()},
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise BundleError(f"{MANIFEST_NAME} is incomplete or malformed ({_reason(exc)}); "
                              "re-export the bundle") from exc
        problem = manifest.inconsistency()
        if problem:
            raise BundleError(f"{MANIFEST_NAME} is inconsistent: {problem}; the file was edited or damaged, "
                              "re-export the bundle")
        return manifest

    def inconsistency(self) -> str | None:
        """What no exported bundle can have (the manifest itself carries no checksum)."""
        mat = self.matryoshka
        for name in [*self.files, *(name for names in self.models.values() for name in names)]:
            problem = uncontained(name)
            if problem:
                return f"it names the file {name!r}, {problem}"
        if any(len(prefix) > MAX_PREFIX for prefix in self.prefixes.values()):
            return f"a task prefix is longer than {MAX_PREFIX} characters"
        if not all(isinstance(name, str) for name in self.input_names):
            return f"inputs {list(self.input_names)!r} are not all names"
        if not isinstance(self.pooling, str) or self.pooling not in POOLINGS:
            return f"pooling {self.pooling!r} is not one of {sorted(POOLINGS)}"
        if self.hidden_size < 1 or not 1 <= mat.min_dim <= mat.max_dim <= self.hidden_size:
            return f"dims {mat.min_dim}..{mat.max_dim} do not fit hidden size {self.hidden_size}"
        if self.max_length < 8:
            return f"max_length {self.max_length} is below 8 tokens"
        if not self.models or any(not files for files in self.models.values()):
            return "it lists no model file"
        unknown = sorted(set(self.models) - set(MODEL_KEYS))
        if unknown:
            return f"models {unknown} are not among {list(MODEL_KEYS)}"
        unlisted = [f for files in self.models.values() for f in files if f not in self.files]
        if unlisted or TOKENIZER_FILE not in self.files:
            return f"no checksum for {', '.join(unlisted or [TOKENIZER_FILE])}"
        # the informational sections the runtime reads to choose an engine (openvino_backend)
        for section, key in (("int8", "scheme"), (STATIC_INT8_MODEL, "scheme"), ("moe", "mode")):
            value = self.extra.get(section)
            if value is not None and not (isinstance(value, dict) and isinstance(value.get(key, ""), str)):
                return f"{section} is {value!r:.60}, not an object with a text {key!r}"
        return integer_form_problem(self.extra.get("int8"))


def integer_form_problem(section) -> str | None:
    """What is wrong with a static int8 section's integer-operator fields (edge_embed/int8_saturation.py
    computes new initializers from them), or None."""
    if not isinstance(section, dict) or section.get("form") is None:
        return None
    if section["form"] != INTEGER_OPERATORS:
        return f"int8 form {section['form']!r:.40} is not {INTEGER_OPERATORS!r}"
    bits = section.get("weight_bits")
    if not is_int(bits) or not 2 <= bits <= 8:
        return f"int8 weight_bits {bits!r:.40} is not a whole number from 2 to 8"
    quantizers = section.get("activation_quantizers")
    if not isinstance(quantizers, list) or not all(_quantizer(entry) for entry in quantizers):
        return "int8 activation_quantizers is not a list of [scale name, scale > 0, zero point name, 0..255]"
    return None


def _quantizer(entry) -> bool:
    if not isinstance(entry, list) or len(entry) != 4:
        return False
    scale_name, scale, zero_name, zero = entry
    positive = isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf")
    return isinstance(scale_name, str) and positive and isinstance(zero_name, str) and is_int(zero) and 0 <= zero <= 255


def uncontained(name: str) -> str | None:
    """Why a file name a bundle lists is not a plain relative path inside the bundle, or None.

    Checked the same way on every OS (a bundle moves between machines): no absolute path or
    drive letter (POSIX or Windows), no `..` part, no backslash, no empty or NUL name. A listed
    file may itself be a symlink (the Hugging Face cache's snapshots are); its name may not leave."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return "which is not a file name"
    if "\\" in name:
        return "which has a backslash (bundles use / between folders)"
    windows = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or windows.drive or windows.root:
        return "an absolute path (a bundle's files are named relative to its directory)"
    if ".." in PurePosixPath(name).parts:
        return "which leaves the bundle directory through '..'"
    if name.strip("./") == "":
        return "which is the bundle directory itself"
    return None


def check_contained(name: str, what: str) -> None:
    """BundleError for a name that uncontained() refuses; `what` says where the name came from."""
    problem = uncontained(name)
    if problem:
        raise BundleError(f"{what} names the file {name!r}, {problem}; a bundle's files must lie inside "
                          "its directory. Do not use this bundle: re-export it, or ask its author for one that "
                          "does not point elsewhere")


def check_model_references(bundle: Path, manifest: Manifest, precision: str) -> None:
    """Every external-data location inside the precision's ONNX file must be a contained name that
    the manifest lists for that precision (so its checksum is checked too). Runs before
    onnxruntime opens the file: onnxruntime would read whatever the locations name."""
    files = manifest.models[precision]
    path = Path(bundle) / files[0]
    if not path.is_file():
        raise BundleError(f"bundle file {path} is missing; copy the whole bundle directory or re-export it")
    try:
        locations = external_data_locations(path)
    except (NotOnnx, OSError, ValueError) as exc:
        verify_files(bundle, manifest, [files[0]])  # a damaged copy: say so, as the checksum tells
        raise BundleError(f"{path} is not a readable ONNX file ({exc}); the bundle is corrupted, "
                          "re-copy or re-export it") from None
    for location in dict.fromkeys(locations):
        check_contained(location, f"the external data of {files[0]}")
        if location.removeprefix("./") not in files[1:]:
            raise BundleError(f"{files[0]} keeps tensors in {location!r}, which the manifest does not list for "
                              f"{precision}; the bundle is inconsistent, re-export it")


def lean_tokenizer_file(manifest: Manifest) -> str | None:
    """The file the runtime tokenizes with in place of tokenizer.json, if the bundle carries one
    (`"tokenizer": {"runtime": {"kind": "unigram", "file": ...}}`, written at export from
    tokenizer.json). Bundles without it, or with a kind this release does not know, use tokenizer.json."""
    runtime = manifest.extra.get("tokenizer", {}).get("runtime") if isinstance(manifest.extra.get("tokenizer"),
                                                                                dict) else None
    if not isinstance(runtime, dict) or runtime.get("kind") != "unigram":
        return None
    name = runtime.get("file")
    check_contained(name, f"{MANIFEST_NAME}'s runtime tokenizer")
    if name not in manifest.files:
        raise BundleError(f"no checksum for {name} in {MANIFEST_NAME}; the bundle is inconsistent, re-export it")
    return name


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path) -> Manifest:
    bundle = Path(bundle)
    if bundle.is_file():
        raise BundleError(f"{bundle} is a file; pass the bundle directory that holds {MANIFEST_NAME}")
    if not bundle.is_dir():
        raise BundleError(
            f"bundle directory {bundle} does not exist. The runtime loads bundles that the exporter writes: "
            "`python -m export SRC --out DIR`, SRC being a Hugging Face checkpoint directory or hub model id"
        )
    path = bundle / MANIFEST_NAME
    if not path.exists():
        raise BundleError(
            f"{bundle} has no {MANIFEST_NAME}: it is not an edge-embed bundle (export one with `python -m export`)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is corrupted, re-export it") from exc
    return Manifest.from_json(data)


def verify_files(bundle: Path, manifest: Manifest, names: list[str]) -> None:
    """Check presence and sha256 of the given bundle files against the manifest."""
    for name in names:
        path = Path(bundle) / name
        if name not in manifest.files:
            raise BundleError(f"{name} is not listed in {MANIFEST_NAME}; the bundle is inconsistent, re-export it")
        if not path.exists():
            raise BundleError(f"bundle file {path} is missing; copy the whole bundle directory or re-export it")
        if sha256_file(path) != manifest.files[name]:
            raise BundleError(
                f"checksum mismatch for {path}: the file is corrupted or was changed after export; "
                "re-copy or re-export the bundle"
            )


def write_manifest(bundle: Path, manifest: Manifest) -> Path:
    path = Path(bundle) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
