"""edge-embed: Nomic Embed text models on ONNX Runtime, offline and torch-free."""
from edge_embed.embedder import Embedder, TruncationWarning
from edge_embed.errors import BundleError, EdgeEmbedError, InputError

__version__ = "0.1.0"
__all__ = ["Embedder", "TruncationWarning", "BundleError", "EdgeEmbedError", "InputError", "__version__"]
