"""gridflex benchmarks: ``python -m bench [name ...]`` (``make bench``).

Each benchmark is a module of this package with a ``run() -> dict`` function, listed in
:data:`bench.__main__.BENCHMARKS`. Its result holds a ``table`` of rows (metric, value, target,
status) that ``__main__`` prints, and an ``ok`` flag that is false when the run was not correct
(for example records lost), whatever its speed. Results go to ``bench/results/`` as JSON.
"""

from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # git-ignored
