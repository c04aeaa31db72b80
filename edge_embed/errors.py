"""The few exception types edge-embed raises. Messages say what to do next."""


class EdgeEmbedError(Exception):
    """Base class of every error edge-embed raises on purpose."""


class BundleError(EdgeEmbedError):
    """A bundle is missing, incomplete, corrupted or of an unknown format version."""


class InputError(EdgeEmbedError, ValueError):
    """Bad arguments to embed(): texts, task, dim, precision, providers."""
