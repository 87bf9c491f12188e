"""The benchmark of issue 5: `python -m bench` (see bench/__main__.py and the README)."""
