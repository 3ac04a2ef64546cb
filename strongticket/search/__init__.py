"""Mask search: the loop that trains (or, for pruning at initialization, scores) every method (``loop``) and the
methods behind one registry (``methods``, one family per module).

``run_search`` and ``run_dir`` are loaded on first use: ``strongticket.config`` reads the method registry, and
the loop reads the config.
"""

__all__ = ["run_dir", "run_search"]


def __getattr__(name: str):
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
