"""Length-prefixed frames: zero-copy scanning of buffers and byte streams.

A frame is a length prefix followed by that many payload bytes. The prefix is
one struct integer format (``'>I'``, ``'<Q'``, ``'!H'`` ...), ``'multiprocessing'``
(the ``multiprocessing.connection`` header) or ``'varint'`` (unsigned LEB128, as
in length-delimited protobuf streams).

- :func:`scan_frames` finds the complete frames in a buffer you already hold.
- :func:`index_frames` finds them too, but makes no object per frame: a
  :class:`FrameIndex` (a read-only sequence) holds the buffer and one
  (offset, length) pair per frame, and makes a frame when it is accessed.
- :class:`FrameScanner` follows a stream: ``feed(chunk)``, or ``get_buffer()`` +
  ``buffer_updated(n)`` to ``recv_into`` the scanner's own buffer.
- :func:`receive_payload` reads the rest of a large frame into one bytes
  object that grows with the bytes that arrive.
- :func:`encode_frame`, :func:`frame_buffers` and :meth:`FramePrefix.header`
  write frames; :func:`dumps_framed` pickles a batch of objects straight into
  frames, back to back in one bytes object.

Payloads shorter than ``copy_threshold`` (default 64 KiB) come back as
``bytes`` copies, longer ones as memoryviews into the buffer (pyzmq's rule:
a view costs more than copying a small payload, and saves a lot on a large
one). Views stay valid for as long as they are referenced.

Limits: ``max_frame_size`` (default :data:`DEFAULT_MAX_FRAME_SIZE`, 128 MiB).
A header declaring more raises :class:`FrameTooLarge` at once; no buffer is
ever sized from a declared length before the bytes arrive.
"""

from collections.abc import Sequence as _Sequence

from ._fastwire import (
    DEFAULT_COPY_THRESHOLD,
    DEFAULT_MAX_FRAME_SIZE,
    FrameError,
    FrameIndex,
    FramePrefix,
    FrameScanner,
    FrameTooLarge,
    dumps_framed,
    encode_frame,
    frame_buffers,
    index_frames,
    receive_payload,
    scan_frames,
)

# A compiled class cannot inherit the ABC; it implements every Sequence method
# itself (__contains__, __reversed__, index, count included), so registering
# it is honest.
_Sequence.register(FrameIndex)

__all__ = [
    "DEFAULT_COPY_THRESHOLD",
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameError",
    "FrameIndex",
    "FramePrefix",
    "FrameScanner",
    "FrameTooLarge",
    "dumps_framed",
    "encode_frame",
    "frame_buffers",
    "index_frames",
    "receive_payload",
    "scan_frames",
]
