"""edge-embed: Nomic Embed text models on ONNX Runtime, offline and torch-free."""
from edge_embed.batching import BatchLimits
from edge_embed.embedder import Embedder
from edge_embed.errors import (
    BundleError,
    EdgeEmbedError,
    InputError,
    NonFiniteError,
    ProviderWarning,
    TextTooLongError,
    TruncationWarning,
)

__version__ = "0.1.0"
__all__ = ["BatchLimits", "BundleError", "EdgeEmbedError", "Embedder", "InputError", "NonFiniteError",
           "ProviderWarning", "TextTooLongError", "TruncationWarning", "__version__"]
