"""The few exception types edge-embed raises, and the integer test its argument checks share.
Messages say what to do next."""
import numbers


class EdgeEmbedError(Exception):
    """Base class of every error edge-embed raises on purpose."""


class BundleError(EdgeEmbedError):
    """A bundle is missing, incomplete, corrupted or of an unknown format version."""


class InputError(EdgeEmbedError, ValueError):
    """Bad arguments to embed(): texts, task, dim, precision, providers."""


class TextTooLongError(InputError):
    """A text is longer than the model's max length and truncation="error" was asked for."""

    def __init__(self, message: str, index: int, tokens: int, max_length: int, at_least: bool = False):
        super().__init__(message)
        self.index, self.tokens, self.max_length, self.at_least = index, tokens, max_length, at_least


class NonFiniteError(EdgeEmbedError):
    """The model produced NaN or infinite states (an fp16 overflow, a damaged export)."""


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's max length and were cut; `count` says how many."""

    def __init__(self, message: str, count: int = 0):
        super().__init__(message)
        self.count = count


class ProviderWarning(UserWarning):
    """The GPU provider chosen by providers="auto" did not start; the model runs on the CPU."""


def is_int(value) -> bool:
    """Whether an argument is an integer: a Python or numpy int, never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
