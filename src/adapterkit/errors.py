"""Exception types. All derive from ValueError so callers that catch bad input generically still work."""


class AdapterError(ValueError):
    """A request the adapter API cannot honour (unknown adapter, duplicate name, unsupported operation)."""


class AdapterConfigError(AdapterError):
    """An invalid adapter configuration: the message names the field and the allowed values."""


class CheckpointError(AdapterError):
    """A checkpoint on disk that cannot be loaded: the message names the file and what is wrong with it."""
