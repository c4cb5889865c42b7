"""Matplotlib for files, not windows: plots are written by runs, searches and benchmarks."""


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
