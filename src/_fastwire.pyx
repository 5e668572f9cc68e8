# cython: language_level=3
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: embedsignature=True, cpow=True, binding=False
#
# Index arithmetic in the core is proven by explicit length checks before every
# access (format sizes are computed at compile time, buffer lengths are checked
# on entry), which is why bounds and wraparound checks are off module-wide.
# Each concern lives in one included part; what the parts share is declared
# in .pxd files that each part cimports by name (src/_fastwire/capi.pxd: the
# C API; wire.pxd: byte order, claims, buffers; opcodes.pxd: pickle opcodes;
# framing.pxd: length prefixes; encoder.pxd: the encoder's state) and, for the
# classes one part drives from another, in src/fastwire/_fastwire.pxd.
include "_fastwire/struct.pxi"
include "_fastwire/frames.pxi"
include "_fastwire/buffers.pxi"
include "_fastwire/pickle_write.pxi"
include "_fastwire/pickle_read.pxi"
include "_fastwire/connection.pxi"
