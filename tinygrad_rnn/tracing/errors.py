"""The exceptions of traced programs (apart, so that every part of the package can raise them)."""


class TraceError(RuntimeError):
    """``fn`` does something a traced program cannot replay faithfully; the message says what."""


class GuardFailed(Exception):
    """A branch taken while tracing does not hold for these inputs (the call then runs eagerly)."""


class Unsupported(Exception):
    """A compiled part whose gradient terms the writer does not express as calls; the step is written in
    primitives instead."""
