"""The oracles the tests and the fuzz targets share, one per format.

``frames``: frame headers written from their specifications with the standard
library's struct. ``pickle_catalogue``: objects that exercise every part of the
pickle format, in an importable module so both picklers find them by name.
``descriptors``: a closed connection's descriptor number reused by a new
socket, for the tests of callouts that close a connection.
fuzz/ imports these as ``tests.support.*`` too (fuzz/_harness.py puts the
repository root on sys.path).
"""
