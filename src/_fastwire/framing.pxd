# The length-prefix vocabulary of frames.pxi, shared with the encoder
# (dumps_framed writes headers in place) and the connection (which reads the
# scanner's incomplete frame).

from libc.stdint cimport uint64_t


cdef enum PrefixKind:
    PREFIX_FIXED = 0          # one struct integer, e.g. '>I', '<Q', '!H'
    PREFIX_MULTIPROCESSING = 1  # '!i'; -1 announces a following '!Q'
    PREFIX_VARINT = 2         # unsigned LEB128 (length-delimited protobuf)

# Outcomes of decoding a header that are not a header size.
cdef enum:
    HEADER_INCOMPLETE = 0
    HEADER_NEGATIVE = -1
    HEADER_OVERLONG = -2


cdef struct PrefixSpec:
    int kind
    Py_ssize_t width     # bytes of a fixed prefix
    bint is_signed
    bint swap            # wire byte order differs from the host's
    uint64_t limit       # largest length the prefix can express


# A read primitive on a descriptor: read at most n bytes into buf from the
# descriptor *fdp (loaded right before the system call), the count read (0 at
# end of stream), or -1 with an exception set.
ctypedef Py_ssize_t (*fd_reader)(const int *fdp, char *buf, Py_ssize_t n) except -1


cdef struct Partial:
    # The frame at the scan position that is not complete yet.
    Py_ssize_t header_size   # 0 while its header is incomplete
    uint64_t length          # declared payload length once the header is complete
    int error                # a HEADER_* code, or 1 for too large; 0 if none
    uint64_t error_length
