"""Limits and resource exhaustion: declared sizes, deep nesting, big inputs.

Every check runs in a child interpreter (the same fastwire build as the test
runner) so that a huge allocation or a C stack overflow is a failed test with
the child's exit status, not a dead test runner. Memory is measured inside the
child with tracemalloc (every Python allocator, including the bytes objects a
decoder would size from a header) and ru_maxrss.

Struct repeat counts are covered in test_struct_hostile.py
(test_huge_repeat_counts_cost_nothing_until_packed).
"""

import os
import pathlib
import subprocess
import sys
import textwrap
from multiprocessing import AuthenticationError

import pytest

import fastwire
from fastwire import frames, net
from fastwire.struct import Struct
from tests.test_callouts import defined_tests

FASTWIRE_PATH = os.path.dirname(os.path.dirname(os.path.abspath(fastwire.__file__)))
MiB = 1024 * 1024

PRELUDE = """
import os, resource, sys, tracemalloc
# A safety net for the machine: an allocation sized by a hostile header fails
# here (MemoryError) instead of taking gigabytes. ASan reserves terabytes of
# address space for its shadow, so the sanitizer build runs without it.
if not os.environ.get("FASTWIRE_SANITIZER_BUILD"):
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
def report(label, peak):
    print(f"{label} peak={peak} maxrss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
def measure(label, fn):
    tracemalloc.start()
    try:
        try:
            fn()
            outcome = "ok"
        except Exception as exc:
            outcome = type(exc).__name__
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"{label} outcome={outcome} peak={peak}")
"""


def run_child(code, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = FASTWIRE_PATH + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (negative: killed by signal)\n"
        f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}")
    results = {}
    for line in proc.stdout.splitlines():
        label, _, rest = line.partition(" ")
        results[label] = dict(item.split("=", 1) for item in rest.split())
    return results


# --- pickle: counted fields that claim more than the input holds ------------------

# Each pickle declares 1 GiB (an allocation that succeeds, so it would be seen)
# but carries 8 bytes.
DECLARED_GIB = 1 << 30
COUNTED_FIELDS = {
    "BINBYTES8": b"\x80\x05\x8e" + DECLARED_GIB.to_bytes(8, "little") + b"8 bytes.",
    "BINUNICODE8": b"\x80\x05\x8d" + DECLARED_GIB.to_bytes(8, "little") + b"8 bytes.",
    "BYTEARRAY8": b"\x80\x05\x96" + DECLARED_GIB.to_bytes(8, "little") + b"8 bytes.",
    "BINBYTES": b"\x80\x03B" + DECLARED_GIB.to_bytes(4, "little") + b"8 bytes.",
    "BINUNICODE": b"\x80\x03X" + DECLARED_GIB.to_bytes(4, "little") + b"8 bytes.",
    "LONG4": b"\x80\x02\x8b" + DECLARED_GIB.to_bytes(4, "little") + b"8 bytes.",
    "FRAME": b"\x80\x04\x95" + DECLARED_GIB.to_bytes(8, "little") + b"K\x01.",
}
# CPython 3.11-3.13's _pickle.c allocates bytes/bytearray objects of the
# declared size before reading them; the interim stdlib-backed facade inherits
# that (finding F3, fuzz/crashes/README.md). The compiled codec must not.
STDLIB_PREALLOCATES = {"BINBYTES8", "BYTEARRAY8", "BINBYTES"}


def _facade_is_stdlib():
    import pickle as std_pickle

    from fastwire import pickle as fw_pickle
    return fw_pickle.Unpickler.__mro__[1] is std_pickle.Unpickler


@pytest.mark.parametrize("opcode", sorted(COUNTED_FIELDS))
@pytest.mark.parametrize("restricted", [False, True], ids=["full", "allowed=()"])
def test_pickle_declared_length_allocates_nothing(opcode, restricted, request):
    if opcode in STDLIB_PREALLOCATES and _facade_is_stdlib():
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="F3: stdlib-backed facade preallocates the declared size"))
    data = COUNTED_FIELDS[opcode]
    kwargs = "allowed=()" if restricted else ""
    results = run_child(f"""
        from fastwire import pickle
        measure("loads", lambda: pickle.loads({data!r}, {kwargs}))
        import io
        measure("load", lambda: pickle.Unpickler(io.BytesIO({data!r}), {kwargs}).load())
    """)
    for label in ("loads", "load"):
        assert results[label]["outcome"] != "ok", f"{opcode}: a truncated pickle was accepted"
        assert results[label]["outcome"] != "MemoryError", f"{opcode}: tried to allocate the declared size"
        assert int(results[label]["peak"]) < 4 * MiB, f"{opcode} {label}: {results[label]}"


def test_pickle_memory_follows_input_size():
    # A real 8 MiB payload costs about 8 MiB (a copy or two), not more.
    results = run_child("""
        from fastwire import pickle
        data = pickle.dumps(b"x" * (8 << 20), protocol=5)
        measure("loads", lambda: pickle.loads(data))
    """)
    assert results["loads"]["outcome"] == "ok"
    assert int(results["loads"]["peak"]) < 3 * 8 * MiB


@pytest.mark.parametrize("opcode,pickled", [
    ("LONG_BINPUT", b"\x80\x02]r\x00\x00\x00\x10."),  # memo index 2**28
    ("PUT", b"(lp268435456\n."),
])
def test_memo_index_allocates_nothing(opcode, pickled, request):
    if _facade_is_stdlib():
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="F4: the stdlib sizes its memo table by the largest PUT index"))
    results = run_child(f"""
        from fastwire import pickle
        measure("loads", lambda: pickle.loads({pickled!r}))
    """)
    assert results["loads"]["outcome"] == "ok", results
    assert int(results["loads"]["peak"]) < 4 * MiB, results


def test_restricted_mode_does_not_build_bytearray_from_a_size():
    """F2 (fuzz/crashes/README.md): a 30-byte pickle naming bytearray(1 GiB)
    must not make restricted mode allocate what it names."""
    pickled = b"\x80\x04cbuiltins\nbytearray\nJ\x00\x00\x00\x40\x85R."  # bytearray(1 GiB)
    results = run_child(f"""
        from fastwire import pickle
        measure("loads", lambda: pickle.loads({pickled!r}, allowed=()))
    """)
    assert int(results["loads"]["peak"]) < 4 * MiB, results


# --- nesting --------------------------------------------------------------------

DEPTH = 1_000_000


# Each pickle holds DEPTH containers, one inside the other.
NESTING_BUILDERS = {
    "lists": "b'\\x80\\x02' + b']' * D + b'a' * (D - 1) + b'.'",
    "tuples": "b'\\x80\\x02' + b'(' * (D - 1) + b')' + b't' * (D - 1) + b'.'",
    "dicts": "b'\\x80\\x02}' + b'K\\x00}' * (D - 1) + b's' * (D - 1) + b'.'",
    "frozensets": "b'\\x80\\x04' + b'(' * D + b'\\x91' * D + b'.'",
}
# The innermost container of each shape, reached one level at a time (the
# value is too deep for anything recursive, == included).
NESTING_STEP = {"lists": "x[0] if x else None", "tuples": "x[0] if x else None",
                "dicts": "x.get(0)", "frozensets": "next(iter(x), None)"}


@pytest.mark.parametrize("shape", sorted(NESTING_BUILDERS))
def test_trusted_loads_of_million_deep_nesting_builds_it_like_the_stdlib(shape):
    # Built by hand: the opcodes are what any producer could send. Both
    # decoders build nesting without C recursion, so the one right outcome is
    # the whole value, as deep as sent.
    results = run_child(f"""
        import pickle as std
        from fastwire import pickle
        D = {DEPTH}
        data = {NESTING_BUILDERS[shape]}
        for label, loads in (("fastwire", pickle.loads), ("stdlib", std.loads)):
            x = loads(data)
            depth = 0
            while x is not None:
                depth += 1
                x = {NESTING_STEP[shape]}
            print(f"{{label}} depth={{depth}}")
    """, timeout=300)
    assert int(results["stdlib"]["depth"]) == DEPTH
    assert int(results["fastwire"]["depth"]) == DEPTH


@pytest.mark.parametrize("shape", sorted(NESTING_BUILDERS))
def test_restricted_loads_of_million_deep_nesting_is_refused_at_max_depth(shape):
    # Restricted mode bounds nesting (a deep tuple hashed as a dict key
    # overflows CPython's C stack): a clean UnpicklingError that names the limit.
    results = run_child(f"""
        from fastwire import pickle
        D = {DEPTH}
        data = {NESTING_BUILDERS[shape]}
        try:
            pickle.loads(data, allowed=())
            print("result outcome=ok names_limit=False")
        except Exception as exc:
            print(f"result outcome={{type(exc).__name__}} names_limit={{'max_depth' in str(exc)}}")
    """, timeout=300)
    assert results["result"] == {"outcome": "UnpicklingError", "names_limit": "True"}


@pytest.mark.parametrize("shape", ["list", "dict", "tuple"])
def test_dumps_of_deep_structure_raises_recursionerror(shape):
    wrap = {"list": "[value]", "dict": "{'k': value}", "tuple": "(value,)"}[shape]
    results = run_child(f"""
        from fastwire import pickle
        value = 0
        for _ in range(200_000):
            value = {wrap}
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            try:
                pickle.dumps(value, protocol=protocol)
                print(f"p{{protocol}} outcome=ok")
            except RecursionError:
                print(f"p{{protocol}} outcome=RecursionError")
        # Tear down without recursing in C either.
        del value
        print("teardown outcome=ok")
    """, timeout=300)
    assert results.pop("teardown")["outcome"] == "ok"
    assert {r["outcome"] for r in results.values()} == {"RecursionError"}


# --- frames ---------------------------------------------------------------------

@pytest.mark.parametrize("prefix,header", [
    (">I", (100 * MiB).to_bytes(4, "big")),
    ("<Q", (100 * MiB).to_bytes(8, "little")),
    ("varint", b"\x80\x80\x80\x32"),  # 100 MiB
    ("multiprocessing", b"\xff\xff\xff\xff" + (100 * MiB).to_bytes(8, "big")),
])
def test_frame_declared_length_allocates_nothing(prefix, header):
    results = run_child(f"""
        from fastwire import frames
        def scanner_feed():
            scanner = frames.FrameScanner({prefix!r})
            assert scanner.feed({header!r} + b"12345678") == []
            assert scanner.partial_frame_size == {100 * MiB}
            window = scanner.get_buffer()
            assert len(window) < 4 * 1024 * 1024, len(window)
        measure("feed", scanner_feed)
        measure("scan", lambda: frames.scan_frames({header!r} + b"12345678", {prefix!r}))
    """)
    assert results["feed"]["outcome"] == "ok", results
    assert results["scan"]["outcome"] == "ok", results
    for label in ("feed", "scan"):
        assert int(results[label]["peak"]) < 4 * MiB, results


def test_frame_above_max_frame_size_is_refused_at_the_header():
    results = run_child("""
        from fastwire import frames
        def oversize():
            scanner = frames.FrameScanner(">Q", max_frame_size=1024)
            scanner.feed((1 << 40).to_bytes(8, "big"))
        measure("feed", oversize)
    """)
    assert results["feed"]["outcome"] == "FrameTooLarge"
    assert int(results["feed"]["peak"]) < MiB


def test_frame_too_large_leaves_the_scanner_refusing_later_calls():
    # The stream position is lost past an oversized header: every later call
    # raises the same error rather than decoding the payload as headers.
    scanner = frames.FrameScanner(">I", max_frame_size=10)
    with pytest.raises(frames.FrameTooLarge):
        scanner.feed((11).to_bytes(4, "big") + b"x" * 11 + (1).to_bytes(4, "big") + b"y")
    for call in (lambda: scanner.feed(b""), lambda: scanner.feed((1).to_bytes(4, "big") + b"z"),
                 scanner.get_buffer):
        with pytest.raises(frames.FrameTooLarge):
            call()


# --- struct ---------------------------------------------------------------------

def test_pack_many_past_sys_maxsize_raises_memoryerror_before_packing():
    converted = []

    class Recorder:
        def __index__(self):
            converted.append(self)
            return 1

    record = Struct(f"{sys.maxsize // 2}xB")
    with pytest.raises(MemoryError):
        record.pack_many([(Recorder(),), (Recorder(),)])
    assert converted == []
    # One row fits the same bound: the refusal is the product, not the size.
    assert Struct("4xB").pack_many([(Recorder(),)]) == b"\0" * 4 + b"\1"


# --- net ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [257, 1000])
def test_authentication_message_over_256_bytes_raises_authenticationerror(size):
    challenger, answerer = net.Pipe()
    with challenger, answerer:
        message = b"#CHALLENGE#{sha256}"
        challenger.send_bytes(message + b"x" * (size - len(message)))
        challenger.send_bytes(b"#WELCOME#")     # so a limit too wide fails the test, not hangs it
        with pytest.raises(AuthenticationError):
            net.answer_challenge(answerer, b"key")


def test_authentication_message_of_256_bytes_is_read():
    challenger, answerer = net.Pipe()
    with challenger, answerer:
        message = b"#CHALLENGE#{sha256}"
        challenger.send_bytes(message + b"x" * (256 - len(message)))
        challenger.send_bytes(b"#WELCOME#")
        net.answer_challenge(answerer, b"key")      # the reply goes into the pipe's buffer
        assert challenger.recv_bytes().startswith(b"{sha256}")


# --- docs/limits.md: every row is backed by the tests named here ----------------

ROOT = pathlib.Path(__file__).resolve().parent.parent

# "part | limit" (the row's first two cells, as written) -> the tests that prove it.
LIMIT_TESTS = {
    "`fastwire.struct` | compiled-format cache of the module functions": [
        "tests/test_struct_api.py::test_format_cache_is_bounded_at_100_entries",
        "tests/test_struct_api.py::test_clearcache_releases_cached_formats"],
    "`fastwire.struct` | a format's total size (repeat counts)": [
        "tests/test_struct_hostile.py::test_size_overflow_is_struct_error"],
    "`fastwire.struct` | compiling a format": [
        "tests/test_struct_hostile.py::test_huge_repeat_counts_cost_nothing_until_packed",
        "tests/test_struct_hostile.py::test_format_compile_cost_follows_format_length"],
    "`Struct.pack_many` | rows × size": [
        "tests/test_limits.py::test_pack_many_past_sys_maxsize_raises_memoryerror_before_packing"],
    "`Struct.unpack_many` | buffer length": [
        "tests/test_struct_batches.py::test_unpack_many_needs_a_multiple_of_size"],
    "`fastwire.pickle` (reading) | length fields (`BINBYTES8`, `BINUNICODE8`, `FRAME` ...)": [
        "tests/test_limits.py::test_pickle_declared_length_allocates_nothing",
        "tests/test_pickle_loads.py::test_large_payload_from_file_is_read_in_bounded_chunks"],
    "`fastwire.pickle` (reading) | memo indices": [
        "tests/test_limits.py::test_memo_index_allocates_nothing"],
    "`fastwire.pickle` (reading, trusted) | nesting depth": [
        "tests/test_limits.py::test_trusted_loads_of_million_deep_nesting_builds_it_like_the_stdlib",
        "tests/test_restricted_bounds.py::test_trusted_mode_builds_deep_nesting_like_the_stdlib_gh_154318"],
    "`fastwire.pickle` (reading, `allowed=`) | nesting depth": [
        "tests/test_limits.py::test_restricted_loads_of_million_deep_nesting_is_refused_at_max_depth",
        "tests/test_restricted_bounds.py::test_max_depth_accepted_at_the_limit_refused_one_past",
        "tests/test_restricted_bounds.py::test_deep_tuple_as_dict_key_is_refused_not_a_segfault"],
    "`fastwire.pickle` (reading, `allowed=`) | work: keys and set items hashed, arguments and state passed, "
    "the object returned, shared parts counted once per reference": [
        "tests/test_restricted_bounds.py::test_work_budget_is_work_factor_times_input_bytes_plus_1024",
        "tests/test_restricted_bounds.py::test_shared_tuples_as_dict_key_are_refused_before_hashing",
        "tests/test_limits.py::test_regression_structure_fuzz_inputs_load_within_their_bounds"],
    "`fastwire.pickle` (reading, `allowed=`) | arguments of value constructors": [
        "tests/test_limits.py::test_restricted_mode_does_not_build_bytearray_from_a_size",
        "tests/test_pickle_restricted.py::test_value_constructors_cannot_allocate_or_import_by_surprise",
        "tests/test_restricted_bounds.py::test_tuple_subclass_arguments_are_checked_like_tuples"],
    "`fastwire.pickle` (writing) | nesting depth": [
        "tests/test_limits.py::test_dumps_of_deep_structure_raises_recursionerror"],
    "`fastwire.frames` | `max_frame_size`": [
        "tests/test_frames.py::test_default_max_frame_size",
        "tests/test_frames.py::test_oversized_header_raises_at_once",
        "tests/test_limits.py::test_frame_too_large_leaves_the_scanner_refusing_later_calls"],
    "`fastwire.frames` | negative or malformed length (signed prefixes, over-long varints)": [
        "tests/test_frames.py::test_bad_length_prefix_raises"],
    "`fastwire.frames` | payload too long for the prefix (encoding)": [
        "tests/test_frames.py::test_headers_match_reference"],
    "`fastwire.frames` | scanner buffer": [
        "tests/test_frames.py::test_window_grows_with_received_bytes_only",
        "tests/test_limits.py::test_frame_declared_length_allocates_nothing"],
    "`fastwire.net` | `max_frame_size`": [
        "tests/test_net.py::test_oversized_frame_raises_and_closes"],
    "`fastwire.net` | `recv_bytes(maxlength)`": [
        "tests/test_net.py::test_recv_bytes_maxlength_matches_stdlib"],
    "`fastwire.net` | `recv_bytes_into(buf)`": [
        "tests/test_net.py::test_recv_bytes_into_matches_stdlib"],
    "`fastwire.net` | authentication messages": [
        "tests/test_limits.py::test_authentication_message_of_256_bytes_is_read",
        "tests/test_net_handshake.py::test_a_1000_byte_authentication_message_raises_authentication_error",
        "tests/test_limits.py::test_authentication_message_over_256_bytes_raises_authenticationerror"],
    "`fastwire.net` | time for the `authkey` handshake": [
        "tests/test_net_handshake.py::test_handshake_timeout_default_is_documented_and_configurable",
        "tests/test_net_handshake.py::test_handshake_timeout_an_idle_peer_does_not_block_a_later_client",
        "tests/test_net_handshake.py::test_client_handshake_timeout_bounds_a_silent_server"],
    "`fastwire.net` | HMAC-MD5 in the handshake": [
        "tests/test_net_handshake.py::test_allow_md5_false_refuses_a_bare_md5_response",
        "tests/test_net_handshake.py::test_digest_policy_with_stdlib_clients"],
    "`fastwire.net` | time per read or write": [
        "tests/test_net.py::test_timeout_keeps_received_bytes",
        "tests/test_net_faults.py::test_recv_timeout_mid_message_over_1_mib_closes_the_connection",
        "tests/test_net_faults.py::test_writer_timeout_closes_the_connection"],
    "`fastwire.net` | time per receive call, whole": [
        "tests/test_net_faults.py::test_recv_timeout_is_a_deadline_for_the_whole_call_against_a_trickling_peer",
        "tests/test_net_faults.py::test_recv_timeout_keeps_the_bytes_received_so_far"],
    "`fastwire.net` | what `recv()` builds": [
        "tests/test_net.py::test_recv_refuses_globals_by_default_and_stream_continues"],
    "`fastwire.aio` | frame size before the `authkey` handshake is done": [
        "tests/test_aio.py::test_handshake_refuses_a_big_message_before_authentication"],
    "`fastwire.aio` | time for the `authkey` handshake": [
        "tests/test_net_handshake.py::test_aio_handshake_timeout_releases_an_idle_peer"],
    "`fastwire.aio` | `max_frame_size`": [
        "tests/test_aio.py::test_oversized_frame_aborts"],
    "`fastwire.aio` | buffers in one out-of-band message received": [
        "tests/test_aio_oob.py::test_max_buffers_and_max_message_size_at_and_past_the_limit",
        "tests/test_aio_oob.py::test_hostile_peer"],
    "`fastwire.aio` | bytes of all buffers of one out-of-band message received": [
        "tests/test_aio_oob.py::test_max_buffers_and_max_message_size_at_and_past_the_limit",
        "tests/test_aio_oob.py::test_a_claimed_buffer_commits_only_what_arrived"],
    "`fastwire.aio` | complete messages buffered, not yet received": [
        "tests/test_aio.py::test_regression_flow_control_both_ways_gh_127655"],
    "`fastwire.aio` | what `recv()` builds": [
        "tests/test_aio.py::test_restricted_by_default_trusted_on_request"],
    "`fastwire.dask` | what the `\"fastwire\"` family builds": [
        "tests/test_dask.py::test_restricted_family_on_workers_refuses_disallowed_globals_and_keeps_serving"],
}


def limit_rows():
    lines = (ROOT / "docs" / "limits.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| part | limit | default (how to change it) | past the limit |")
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        yield f"{cells[0]} | {cells[1]}"


def test_every_row_of_the_limits_page_names_its_tests():
    rows = list(limit_rows())
    assert len(rows) > 20
    assert sorted(set(rows) - set(LIMIT_TESTS)) == [], "rows of docs/limits.md with no tests named here"
    assert sorted(set(LIMIT_TESTS) - set(rows)) == [], "tests named here for rows no longer in docs/limits.md"


@pytest.mark.parametrize("row", sorted(LIMIT_TESTS))
def test_limit_row_names_existing_tests(row):
    for test in LIMIT_TESTS[row]:
        file, name = test.split("::")
        assert name in defined_tests(ROOT / file), f"{row}: {file} defines no {name}"


# --- fuzz_pickle_structure: its seeds and every finding replay cleanly ------------

STRUCTURE_TARGET = ROOT / "fuzz" / "fuzz_pickle_structure.py"
STRUCTURE_FINDINGS = sorted(p.name for p in (ROOT / "fuzz" / "crashes" / "pickle_structure").iterdir())


@pytest.mark.parametrize("name", ["corpus", *STRUCTURE_FINDINGS])
def test_regression_structure_fuzz_inputs_load_within_their_bounds(name):
    """Each reproducer in fuzz/crashes/pickle_structure/ (listed in its README:
    deep nesting hashed, memo DAGs hashed or str()-ed, namedtuple call
    arguments), and the seed corpus, replayed through the target's checks (no
    crash, time and memory bounds, no import in restricted mode) in a child
    interpreter, so a crash is a failed test."""
    path = ROOT / "fuzz" / ("corpus/pickle_structure" if name == "corpus" else f"crashes/pickle_structure/{name}")
    env = dict(os.environ, PYTHONPATH=FASTWIRE_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(STRUCTURE_TARGET), "--replay", str(path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "all passed" in result.stdout
