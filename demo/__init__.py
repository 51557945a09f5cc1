"""The gridflex demo (`make demo`, `python -m demo`): see demo/__main__.py."""
