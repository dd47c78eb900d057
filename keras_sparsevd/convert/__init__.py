"""Converting any Keras model's layers between Keras and Sparse VD, in place.

`tree` walks a model's layer tree, `swap` converts one layer in place in
either direction, `saving` copies and loads models, `sparsify` is the
user's entry point.
"""
