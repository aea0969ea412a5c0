"""``python -m ir3de``: the ``ir3de`` command, for where its script is not on PATH."""

from ir3de.cli import run  # (absolute: see ir3de.cli's imports)

if __name__ == "__main__":  # (importing the module, as doctest collection does, runs nothing)
    run()
