"""Will this checkpoint's export fit in this machine's memory? Answered from config.json alone,
before any weight is read or any tensor allocated: a damaged or hostile config (a vocabulary of
10^12 rows) must fail with the fields named, not take the machine down swapping."""
from __future__ import annotations

import os

from export.checkpoint import CheckpointError

# Sizes that set the parameter count, per config style: (vocab, width, layers, inner, positions, experts)
NOMIC_FIELDS = ("vocab_size", "n_embd", "n_layer", "n_inner", None, "num_experts")
BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
               None)
# The export holds the checkpoint's tensors, the torch model, the traced fp32 graph and its ONNX
# copy (4 x fp32 weights), plus int8 quantization's copies: 7 fp32 copies bounds what was measured
# (the full-size v2-moe export peaked at 12.2 GB of RSS for its 475M parameters: 6.4 copies).
COPIES = 7
MAX_SIZE = 1 << 40  # any one size past this is damage, whatever the machine


def sizes(config: dict) -> dict[str, int]:
    """The config's size fields that exist, checked to be positive integers."""
    names = NOMIC_FIELDS if config.get("model_type") == "nomic_bert" else BERT_FIELDS
    found = {}
    for name in names:
        if name is None or config.get(name) is None:
            continue
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
            raise CheckpointError(f"config.json: {name} is {value!r:.40}, not a size (a non-negative integer "
                                  f"up to {MAX_SIZE})")
        found[name] = value
    return found


def parameter_count(config: dict) -> int:
    """Parameters of the encoder the config describes (embeddings + layers), to within a few %."""
    found = sizes(config)
    nomic = config.get("model_type") == "nomic_bert"
    vocab = found.get("vocab_size", 0)
    width = found.get("n_embd" if nomic else "hidden_size", 0)
    layers = found.get("n_layer" if nomic else "num_hidden_layers", 0)
    inner = found.get("n_inner" if nomic else "intermediate_size") or 4 * width
    positions = 0 if nomic else found.get("max_position_embeddings", 0)
    experts = max(found.get("num_experts", 0), 1)
    # v1.5's SwiGLU has three matrices, v2-moe's GELU two; v2-moe's experts sit on every other layer
    gated = nomic and config.get("activation_function", "swiglu") != "gelu"
    mlp = (3 if gated else 2) * width * inner
    every = config.get("moe_every_n_layers") or 0
    moe_layers = layers // every if experts > 1 and isinstance(every, int) and every > 0 else 0
    if experts > 1 and not every:
        moe_layers = layers  # an MoE config without the field: count every layer, the upper bound
    return (vocab + positions) * width + layers * (4 * width * width + mlp) + moe_layers * (experts - 1) * mlp


def available_memory() -> int | None:
    """Bytes of memory this machine can give (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(config: dict, available: int | None = None) -> None:
    """CheckpointError naming the size fields when the export would need more memory than there is."""
    available = available_memory() if available is None else available
    needed = parameter_count(config) * 4 * COPIES
    if available is not None and needed > available:
        fields = ", ".join(f"{name}={value}" for name, value in sizes(config).items())
        raise CheckpointError(
            f"config.json describes a model of {parameter_count(config) / 1e9:.3g} billion parameters "
            f"({fields}); exporting it needs about {needed / 2**30:.1f} GiB of memory and this machine has "
            f"{available / 2**30:.1f} GiB available. Check these fields (a damaged config?) or export on a "
            "larger machine"
        )
