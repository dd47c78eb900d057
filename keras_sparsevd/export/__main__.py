"""Entry point of ``python -m keras_sparsevd.export``; see `cli`."""

from keras_sparsevd.export.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
