"""The two exceptions of traced programs (apart, so that every part of the package can raise them)."""


class TraceError(RuntimeError):
    """``fn`` does something a traced program cannot replay faithfully; the message says what."""


class GuardFailed(Exception):
    """A branch taken while tracing does not hold for these inputs (the call then runs eagerly)."""
