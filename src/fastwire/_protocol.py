"""The wire protocol fastwire.net and fastwire.aio speak: multiprocessing.connection's.

Sans-IO: nothing here reads or writes a socket. It holds

* the frame: ``PREFIX``, a ``'!i'`` length header (``-1`` then ``'!Q'`` above
  2 GiB), and the thresholds that decide how a payload is handled on each side
  (``COPY_THRESHOLD``, ``STREAM_THRESHOLD``);
* what a connection decodes with (``restriction_of``);
* the message every transport gives a peer that closes in the middle of a
  frame (``EOF_IN_MESSAGE``);
* the out-of-band message (PEP 574): a manifest frame that carries the pickle
  stream, then one frame per buffer (``manifest``, ``parse_manifest``);
* the authkey handshake (Lib/multiprocessing/connection.py, 3.12+ protocol,
  which also answers and verifies the legacy HMAC-MD5 of 3.11 peers), written
  once as generators of I/O steps: each step yields the bytes to send, or
  ``RECEIVE`` to be sent the next message back. fastwire.net drives them over a
  Connection, fastwire.aio over a stream.

The thresholds and the EOF message are defined by the compiled core, which
needs them as C values; this module is where the transports take them from.
"""

from __future__ import annotations

import hmac
import os
import struct
from multiprocessing import AuthenticationError

from ._fastwire import DEFAULT_COPY_THRESHOLD, DEFAULT_MAX_FRAME_SIZE, EOF_IN_MESSAGE, STREAM_THRESHOLD, Allowed
from .frames import FrameError, FramePrefix, FrameTooLarge

__all__ = [
    "COPY_THRESHOLD",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_BUFFERS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "EOF_IN_MESSAGE",
    "HANDSHAKE_FAILURES",
    "MAX_HANDSHAKE_MESSAGE",
    "PREFIX",
    "RECEIVE",
    "STREAM_THRESHOLD",
    "answer_steps",
    "challenge_steps",
    "check_authkey",
    "check_handshake_timeout",
    "handshake_failure",
    "is_out_of_band",
    "manifest",
    "parse_manifest",
    "restriction_of",
]

PREFIX = FramePrefix("multiprocessing")
# Payloads below this are copied out of the receive buffer (and joined with
# their header on the way out); larger ones are views / scatter-gather (pyzmq's rule).
COPY_THRESHOLD = DEFAULT_COPY_THRESHOLD
# STREAM_THRESHOLD: a bytes/bytearray at least this large is sent without a copy,
# and a frame at least this large is read straight into its final place.


def restriction_of(trusted, allowed):
    """What a connection decodes with: None if `trusted` (any pickle), else
    `allowed` as loads(allowed=) takes it, an :class:`~fastwire.pickle.Allowed`
    as given or any other iterable as a tuple (built into an Allowed once per
    tuple)."""
    if trusted:
        return None
    return allowed if isinstance(allowed, Allowed) else tuple(allowed)


# -- out-of-band buffers (PEP 574) ---------------------------------------------
#
# A message whose pickle (protocol 5, with a buffer_callback) set buffers aside
# travels as 1 + n ordinary frames: first the manifest frame
#
#     MAGIC (4 bytes) | version (u8) | n (u32) | n x (flags (u8), size (u64)) | pickle stream
#
# (integers big-endian, as the frame header), then each buffer's bytes as one
# frame of exactly the size the manifest gave. Flag bit 0: the sender's buffer
# was read-only. MAGIC starts with 0xF5, which is no pickle opcode: a plain
# pickle is never taken for a manifest, and a standard-library peer that gets
# one fails at once (UnpicklingError "invalid load key") instead of misreading it.

OOB_MAGIC = b"\xf5FWB"
OOB_VERSION = 1
OOB_READONLY = 0x01
_OOB_HEAD = struct.Struct("!4sBI")
_OOB_ENTRY = struct.Struct("!BQ")
# Bounds on what a manifest may claim (each configurable per connection): the
# buffer count, and the sum of the buffer sizes; each buffer is also a frame,
# so max_frame_size bounds it too.
DEFAULT_MAX_BUFFERS = 1024
DEFAULT_MAX_MESSAGE_SIZE = 8 * DEFAULT_MAX_FRAME_SIZE


def is_out_of_band(frame):
    """True if the frame payload `frame` (bytes-like) is a manifest frame."""
    return frame[:4] == OOB_MAGIC


def manifest(raw_buffers):
    """The manifest for `raw_buffers` (contiguous byte memoryviews, as
    ``PickleBuffer.raw()`` gives), to which the pickle stream is appended."""
    parts = [_OOB_HEAD.pack(OOB_MAGIC, OOB_VERSION, len(raw_buffers))]
    parts += [_OOB_ENTRY.pack(OOB_READONLY if raw.readonly else 0, raw.nbytes) for raw in raw_buffers]
    return b"".join(parts)


def parse_manifest(frame, *, max_buffers=DEFAULT_MAX_BUFFERS, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                   max_message_size=DEFAULT_MAX_MESSAGE_SIZE):
    """``(sizes, readonly_flags, pickle_offset)`` of the manifest frame `frame`.

    FrameError for a malformed manifest or an unknown version; FrameTooLarge if
    it claims more than `max_buffers` buffers, a buffer above `max_frame_size`
    or more than `max_message_size` bytes in all. Nothing is allocated from
    the claimed sizes here.
    """
    if len(frame) < _OOB_HEAD.size:
        raise FrameError("out-of-band manifest cut short")
    magic, version, count = _OOB_HEAD.unpack_from(frame)
    if magic != OOB_MAGIC:
        raise FrameError("not an out-of-band manifest")
    if version != OOB_VERSION:
        raise FrameError(f"out-of-band manifest version {version} is not supported (this end speaks {OOB_VERSION})")
    if count > max_buffers:
        raise FrameTooLarge(f"out-of-band message of {count} buffers exceeds max_buffers={max_buffers}")
    end = _OOB_HEAD.size + count * _OOB_ENTRY.size
    if len(frame) < end:
        raise FrameError("out-of-band manifest cut short")
    sizes = []
    readonly = []
    total = 0
    for flags, size in _OOB_ENTRY.iter_unpack(memoryview(frame)[_OOB_HEAD.size:end]):
        if flags & ~OOB_READONLY:
            raise FrameError(f"unknown out-of-band buffer flags {flags:#x}")
        if size > max_frame_size:
            raise FrameTooLarge(f"out-of-band buffer of {size} bytes exceeds max_frame_size={max_frame_size}")
        total += size
        if total > max_message_size:
            raise FrameTooLarge(f"out-of-band buffers exceed max_message_size={max_message_size}")
        sizes.append(size)
        readonly.append(bool(flags & OOB_READONLY))
    return sizes, readonly, end


_MESSAGE_LENGTH = 40
_CHALLENGE = b"#CHALLENGE#"
_WELCOME = b"#WELCOME#"
_FAILURE = b"#FAILURE#"
_ALLOWED_DIGESTS = frozenset({b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"})
_MAX_DIGEST_LEN = max(len(d) for d in _ALLOWED_DIGESTS)
# A 3.11 peer sends a bare 20-byte challenge and answers with a bare 16-byte HMAC-MD5.
_LEGACY_LENGTHS = (20, 16)

# Every handshake waits this long at most, by default: an idle or trickling
# peer must not hold a Listener's accept() (or an aio server's task) forever.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# No handshake message is longer; an unauthenticated peer gets nothing bigger in.
MAX_HANDSHAKE_MESSAGE = 256
# What an unauthenticated peer can make a handshake read raise, besides
# AuthenticationError: cut streams, timeouts, oversize messages (OSError, EOFError),
# bad length prefixes (FrameError/FrameTooLarge are ValueErrors), and digests
# this build of hashlib cannot compute (ValueError).
HANDSHAKE_FAILURES = (OSError, EOFError, ValueError)
# What a handshake step yields to be sent the peer's next message.
RECEIVE = None


def check_authkey(authkey):
    """TypeError unless `authkey` is bytes (as the standard library checks it)."""
    if not isinstance(authkey, bytes):
        raise TypeError("authkey should be a byte string")


def check_handshake_timeout(timeout):
    """`timeout` if it is None or positive; else ValueError."""
    if timeout is not None and not timeout > 0:
        raise ValueError("handshake_timeout must be None or > 0")
    return timeout


def handshake_failure(exc):
    """The AuthenticationError a handshake raises for `exc`, an error the peer
    caused (one of HANDSHAKE_FAILURES): a server that catches
    AuthenticationError survives every unauthenticated peer."""
    return AuthenticationError(f"authentication handshake failed: {exc!r}")


def _digest_name_and_payload(message):
    if len(message) in _LEGACY_LENGTHS:
        return "", message
    if message.startswith(b"{"):
        curly = message.find(b"}", 1, _MAX_DIGEST_LEN + 2)
        if curly > 0 and message[1:curly] in _ALLOWED_DIGESTS:
            return message[1:curly].decode("ascii"), message[curly + 1:]
    raise AuthenticationError(
        "unsupported message length, missing digest prefix, or unsupported digest")


def _digest_of(message, allow_md5):
    """The digest the peer's challenge or response uses ('md5' for a bare, legacy one);
    AuthenticationError if it is MD5 and `allow_md5` is false."""
    digest_name = _digest_name_and_payload(message)[0] or "md5"
    if digest_name == "md5" and not allow_md5:
        raise AuthenticationError("the peer uses HMAC-MD5, refused (allow_md5=False)")
    return digest_name


def _response(authkey, message):
    digest_name = _digest_name_and_payload(message)[0]
    if not digest_name:
        try:
            return hmac.new(authkey, message, "md5").digest()
        except ValueError:  # no MD5 (FIPS build)
            digest_name = "sha256"
    mac = hmac.new(authkey, message, digest_name).digest()
    return b"{%s}%s" % (digest_name.encode("ascii"), mac)


def _verify(authkey, message, response):
    digest_name, mac = _digest_name_and_payload(response)
    try:
        expected = hmac.new(authkey, message, digest_name or "md5").digest()
    except ValueError:
        raise AuthenticationError(f"digest {digest_name!r} unsupported") from None
    if len(expected) != len(mac) or not hmac.compare_digest(expected, mac):
        raise AuthenticationError("digest received was wrong")


def challenge_steps(authkey, digest_name="sha256", *, allow_md5=True):
    """Challenge the peer to prove it knows `authkey` (AuthenticationError if not).

    With ``allow_md5=False`` a response in HMAC-MD5 (every peer before 3.12)
    is refused like a wrong one. ValueError at once for a `digest_name` the
    protocol does not offer (or "md5" with ``allow_md5=False``).
    """
    if digest_name.encode("ascii") not in _ALLOWED_DIGESTS or (digest_name == "md5" and not allow_md5):
        raise ValueError(f"digest_name {digest_name!r} is not offered")
    return _challenge_steps(authkey, digest_name, allow_md5)


def _challenge_steps(authkey, digest_name, allow_md5):
    message = b"{%s}%s" % (digest_name.encode("ascii"), os.urandom(_MESSAGE_LENGTH))
    yield _CHALLENGE + message
    response = yield RECEIVE
    try:
        _digest_of(response, allow_md5)
        _verify(authkey, message, response)
    except AuthenticationError:
        yield _FAILURE
        raise
    yield _WELCOME


def answer_steps(authkey, *, allow_md5=True):
    """Prove to the peer that we know `authkey` (AuthenticationError if it disagrees).

    With ``allow_md5=False`` a challenge asking for HMAC-MD5 (every peer
    before 3.12) is refused: AuthenticationError, nothing is answered.
    """
    message = yield RECEIVE
    if not message.startswith(_CHALLENGE):
        raise AuthenticationError("protocol error, expected a challenge")
    message = message[len(_CHALLENGE):]
    if len(message) < 20:
        raise AuthenticationError(f"challenge too short: {len(message)} bytes")
    _digest_of(message, allow_md5)
    yield _response(authkey, message)
    if (yield RECEIVE) != _WELCOME:
        raise AuthenticationError("digest sent was rejected")
