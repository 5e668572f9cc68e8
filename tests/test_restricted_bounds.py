"""Restricted mode bounds structure and work, not only bytes.

A few hundred bytes of pickle can describe a tuple chain deep enough to
overflow CPython's C stack when hashed (gh-154318: tuple_hash recurses
without a guard), or shared structure that is exponentially large unfolded
(hashing it, comparing it, or str() of it).  With allowed= every such load is
refused with UnpicklingError before the work starts: nesting is bounded by
Allowed(max_depth=) and work by Allowed(work_factor=) times the input length
(docs/security.md, docs/limits.md).  Inputs that could crash or hang the
interpreter run in a child process with a time limit.
"""

import collections
import pathlib
import pickle
import struct
import subprocess
import sys
import textwrap

import pytest

from fastwire import net, pickle as fwpickle

ROOT = str(pathlib.Path(__file__).resolve().parent.parent)

# --- hostile pickles, built by hand: the opcodes are what any peer can send -------


def _put(i):
    return b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)


def _get(i):
    return b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)


def deep_tuple_as_dict_key(depth):
    """{((((),),),): None}: built without recursion, hashed by tuple_hash."""
    return b"\x80\x02}" + b")" + b"\x85" * depth + b"Ns."


def shared_tuples(depth):
    """t(k+1) = (t(k), t(k)) through the memo: 2**depth leaves unfolded."""
    body = b"K\x01" + _put(0)
    for i in range(depth):
        body += _get(i) + _get(i) + b"\x86" + _put(i + 1)
    return body


def shared_tuple_as_dict_key(depth):
    return b"\x80\x02}" + shared_tuples(depth) + b"Ns."


def shared_lists(depth):
    """l(k+1) = [l(k), l(k)]: each list complete before it is shared."""
    body = b"]" + _put(0) + b"0"
    for i in range(depth):
        body += b"]" + _put(i + 1) + b"(" + _get(i) + _get(i) + b"e0"
    return body + _get(depth)


def str_of_shared_lists(depth):
    return b"\x80\x02cbuiltins\nstr\n" + shared_lists(depth) + b"\x85R."


def lists_filled_after_sharing(depth):
    """l(k+1) = [l(k), l(k)] with every list shared while still empty and
    filled afterwards, so sizes recorded as objects are built would be stale."""
    body = b"\x80\x02"
    for i in range(depth + 1):
        body += b"]" + _put(i) + b"0"
    for i in range(depth, 0, -1):
        body += _get(i) + b"(" + _get(i - 1) + _get(i - 1) + b"e0"
    return body + _get(depth) + b"."


def chain_filled_after_sharing(depth):
    """l0 = [l1], l1 = [l2], ...: each list appended to its parent while
    empty, then filled through the memo."""
    body = b"\x80\x02]" + _put(0)
    for i in range(depth):
        body += _get(i) + b"]" + _put(i + 1) + b"a0"
    return body + b"."


def run_child(code, timeout=120):
    proc = subprocess.run([sys.executable, "-"], input=textwrap.dedent(code), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    return proc.stdout


def restricted_load_in_child(data, timeout=60):
    """What a default restricted loads() of `data` prints in a fresh interpreter:
    "refused <message>" for a clean refusal (a crash or a hang fails run_child)."""
    return run_child(f"""
        from fastwire import pickle
        try:
            pickle.loads({data!r}, allowed=())
        except pickle.UnpicklingError as exc:
            print("refused", exc)
    """, timeout=timeout)


# --- the reproducers -----------------------------------------------------------------


def test_deep_tuple_as_dict_key_is_refused_not_a_segfault():
    out = run_child("""
        from fastwire import pickle
        from tests.test_restricted_bounds import deep_tuple_as_dict_key
        try:
            pickle.loads(deep_tuple_as_dict_key(250_000), allowed=())
        except pickle.UnpicklingError as exc:
            print("refused", exc)
    """)
    assert out.startswith("refused") and "max_depth=1000" in out, out


def test_shared_tuples_as_dict_key_are_refused_before_hashing():
    data = shared_tuple_as_dict_key(40)       # 2**40 leaves: hours of hashing
    assert len(data) < 500
    out = restricted_load_in_child(data)
    assert out.startswith("refused") and "work_factor=64" in out, out


def test_str_of_shared_lists_is_refused_str_converts_only_atoms():
    data = str_of_shared_lists(30)            # ~6 GB of text from a few hundred bytes
    assert len(data) < 500
    out = restricted_load_in_child(data)
    assert out.startswith("refused") and "str()" in out, out


@pytest.mark.parametrize("value", [0, -7, 2**100, 1.5, 2j, "text", b"bytes", True, None])
def test_str_of_an_atom_is_converted_as_by_the_stdlib(value):
    data = b"\x80\x02cbuiltins\nstr\n" + pickle.dumps(value, 2)[2:-1] + b"\x85R."
    assert fwpickle.loads(data, allowed=()) == pickle.loads(data) == str(value)


@pytest.mark.parametrize("container", [[1], (1,), {1: 2}, {1}, frozenset({1})])
def test_str_of_a_container_is_refused(container):
    data = b"\x80\x02cbuiltins\nstr\n" + pickle.dumps(container, 2)[2:-1] + b"\x85R."
    assert pickle.loads(data) == str(container)
    with pytest.raises(pickle.UnpicklingError, match="only of builtin atoms"):
        fwpickle.loads(data, allowed=())


@pytest.mark.parametrize("build", [shared_lists, lists_filled_after_sharing])
def test_shared_structure_returned_is_refused_by_the_work_budget(build):
    data = build(30)
    if not data.startswith(b"\x80"):
        data = b"\x80\x02" + data + b"."
    assert len(data) < 600
    with pytest.raises(pickle.UnpicklingError, match="work_factor"):
        fwpickle.loads(data, allowed=())


def test_sharing_within_the_budget_loads_like_the_stdlib():
    data = b"\x80\x02" + shared_lists(6) + b"."
    assert fwpickle.loads(data, allowed=()) == pickle.loads(data)
    value = pickle.loads(data)
    assert value[0] is value[1]


def test_cycles_load_and_count_once():
    a = []
    b = {"a": a}
    a.append(b)
    a.append(a)
    got = fwpickle.loads(pickle.dumps(a), allowed=())
    assert got[0]["a"] is got and got[1] is got


# --- the budget, as documented ---------------------------------------------------------


def _repeated_string(length, refs):
    text = b"x" * length
    return (b"\x80\x02](X" + struct.pack("<I", length) + text + _put(1)
            + _get(1) * (refs - 1) + b"e.")


def _units(length, refs):
    """The documented measure: one unit per object, one more per 8 bytes of
    string data, each shared object counted once per reference."""
    return 1 + refs * (1 + length // 8)


@pytest.mark.parametrize("work_factor", [1, 3])
def test_work_budget_is_work_factor_times_input_bytes_plus_1024(work_factor):
    allowed = fwpickle.Allowed((), work_factor=work_factor)
    length = 800
    refs = 1
    while _units(length, refs + 1) <= work_factor * (len(_repeated_string(length, refs + 1)) + 1024):
        refs += 1
    at_limit, past = _repeated_string(length, refs), _repeated_string(length, refs + 1)
    assert fwpickle.loads(at_limit, allowed=allowed) == pickle.loads(at_limit)
    with pytest.raises(pickle.UnpicklingError, match=f"work_factor={work_factor}"):
        fwpickle.loads(past, allowed=allowed)
    assert fwpickle.loads(past) == pickle.loads(past)          # trusted: no budget


def test_out_of_band_buffer_bytes_are_input_to_the_work_budget():
    # A 4-byte pickle handing out an 8 MiB buffer it was given: the buffer's
    # bytes are input, as if they had been in the stream.
    size = 8 << 20
    stream = pickle.dumps(pickle.PickleBuffer(bytearray(size)), 5, buffer_callback=lambda b: False)
    got = fwpickle.loads(stream, buffers=[bytearray(size)], allowed=())
    assert type(got) is bytearray and got == pickle.loads(stream, buffers=[bytearray(size)])
    # Before they counted, the 4 bytes of stream allowed 64 * (4 + 1024) units: 1 MiB was refused.
    assert len(stream) == 4 and 1 + size // 8 > 64 * (4 + 1024)


def test_hashing_the_same_tuple_again_and_again_is_charged_each_time():
    big = (tuple(range(2000)),)
    key = pickle.dumps(big, 2)[2:-1]
    data = (b"\x80\x02}" + key + _put(9) + b"Ns"
            + (_get(9) + b"Ns") * 2000 + b".")          # one key, set 2001 times
    with pytest.raises(pickle.UnpicklingError, match="work_factor"):
        fwpickle.loads(data, allowed=())
    assert fwpickle.loads(data, allowed=fwpickle.Allowed((), work_factor=1000)) == {big: None}


# --- depth, as documented ------------------------------------------------------------------

NESTERS = {
    "lists": lambda d: b"\x80\x02" + b"]" * d + b"a" * (d - 1) + b".",
    "tuples": lambda d: b"\x80\x02" + b"(" * d + b")" + b"t" * (d - 1) + b".",
    "dicts": lambda d: b"\x80\x02}" + b"K\x00}" * (d - 1) + b"s" * (d - 1) + b".",
    "frozensets": lambda d: b"\x80\x04" + b"(" * d + b"\x91" * d + b".",
    "tuple keys": lambda d: b"\x80\x02}" + b")" + b"\x85" * (d - 1) + b"Ns.",
}
DEPTH_OF = {"tuple keys": lambda d: d + 1}   # the dict around the key adds a level


@pytest.mark.parametrize("shape", NESTERS)
@pytest.mark.parametrize("max_depth", [1, 5, 1000])
def test_max_depth_accepted_at_the_limit_refused_one_past(shape, max_depth):
    depth_of = DEPTH_OF.get(shape, lambda d: d)
    allowed = fwpickle.Allowed((), max_depth=max_depth) if max_depth != 1000 else ()
    at_limit = max([d for d in range(1, max_depth + 1) if depth_of(d) <= max_depth], default=0)
    if at_limit:                        # (a dict around a tuple key is at least 2 deep)
        value = fwpickle.loads(NESTERS[shape](at_limit), allowed=allowed)
        expected = pickle.loads(NESTERS[shape](at_limit))
        assert type(value) is type(expected)
        if max_depth < 100:             # == on deeper values hits the recursion limit
            assert value == expected
    past = NESTERS[shape](at_limit + 1)
    with pytest.raises(pickle.UnpicklingError, match=f"max_depth={max_depth}"):
        fwpickle.loads(past, allowed=allowed)
    fwpickle.loads(past)                # trusted: no bound


def test_depth_of_lists_filled_through_the_memo_is_measured_as_they_end_up():
    data = chain_filled_after_sharing(1500)
    with pytest.raises(pickle.UnpicklingError, match="max_depth=1000"):
        fwpickle.loads(data, allowed=())
    value = fwpickle.loads(chain_filled_after_sharing(900), allowed=())
    for _ in range(900):
        value = value[0]
    assert value == []


@pytest.mark.parametrize("shape", NESTERS)
def test_loads_of_million_deep_nesting_is_refused_in_restricted_mode(shape):
    out = run_child(f"""
        from fastwire import pickle
        D = 1_000_000
        builders = {{"lists": lambda d: b"\\x80\\x02" + b"]" * d + b"a" * (d - 1) + b".",
                    "tuples": lambda d: b"\\x80\\x02" + b"(" * d + b")" + b"t" * (d - 1) + b".",
                    "dicts": lambda d: b"\\x80\\x02}}" + b"K\\x00}}" * (d - 1) + b"s" * (d - 1) + b".",
                    "frozensets": lambda d: b"\\x80\\x04" + b"(" * d + b"\\x91" * d + b".",
                    "tuple keys": lambda d: b"\\x80\\x02}}" + b")" + b"\\x85" * (d - 1) + b"Ns."}}
        try:
            pickle.loads(builders[{shape!r}](D), allowed=())
        except pickle.UnpicklingError as exc:
            print("refused", exc)
    """, timeout=300)
    assert out.startswith("refused") and "max_depth=1000" in out, out


def test_allowed_limits_are_validated():
    assert fwpickle.DEFAULT_MAX_DEPTH == 1000 and fwpickle.DEFAULT_WORK_FACTOR == 64
    a = fwpickle.Allowed()
    assert (a.max_depth, a.work_factor) == (1000, 64)
    for bad in (0, 10_001, 1.5, "3", None):
        with pytest.raises(ValueError, match="max_depth"):
            fwpickle.Allowed((), max_depth=bad)
    for bad in (0, -1, 2**20 + 1, 2.0):
        with pytest.raises(ValueError, match="work_factor"):
            fwpickle.Allowed((), work_factor=bad)
    assert fwpickle.Allowed((), max_depth=10_000).max_depth == 10_000


def test_trusted_mode_builds_deep_nesting_like_the_stdlib_gh_154318():
    """Trusted mode keeps the stdlib's behaviour: a trusted pickle can run any
    code, so bounding it buys nothing; hashing what it built may still crash
    CPython itself (gh-154318), as after pickle.loads."""
    data = b"\x80\x02" + b"(" * 5000 + b")" + b"t" * 4999 + b"."
    value, expected = fwpickle.loads(data), pickle.loads(data)
    for _ in range(4999):
        assert len(value) == len(expected) == 1
        value, expected = value[0], expected[0]
    assert value == expected == ()


# --- calls: arguments are checked as the exact tuple that is called --------------------

One = collections.namedtuple("One", "a")
Two = collections.namedtuple("Two", "a b")


def _main_global(name):
    return f"c{__name__}\n{name}\n".encode()


def _tuple_subclass_cases():
    one, two = _main_global("One"), _main_global("Two")
    big = b"J\x00\x00\x00\x80"                              # 2**31
    return {
        "NEWOBJ bytes(2**31)": b"\x80\x02cbuiltins\nbytes\n" + one + big + b"\x85\x81\x81.",
        "NEWOBJ bytearray(2**31)": b"\x80\x02cbuiltins\nbytearray\n" + one + big + b"\x85\x81\x81.",
        "REDUCE bytearray(2**31)": b"\x80\x02cbuiltins\nbytearray\n" + one + big + b"\x85\x81R.",
        "REDUCE bytes(2**31)": b"\x80\x02cbuiltins\nbytes\n" + one + big + b"\x85\x81R.",
        "REDUCE str(b, 'idna')": (b"\x80\x02cbuiltins\nstr\n" + two
                                  + b"C\x01aX\x04\x00\x00\x00idna\x86\x81R."),
        "REDUCE str(list)": b"\x80\x02cbuiltins\nstr\n" + one + b"]\x85\x81R.",
    }


@pytest.mark.parametrize("case", _tuple_subclass_cases())
def test_tuple_subclass_arguments_are_checked_like_tuples(case):
    data = _tuple_subclass_cases()[case]
    with pytest.raises(pickle.UnpicklingError, match="restricted mode"):
        fwpickle.loads(data, allowed=[One, Two])


def test_codec_named_through_a_tuple_subclass_imports_nothing():
    out = run_child("""
        import sys, collections, __main__
        from fastwire import pickle
        Two = collections.namedtuple("Two", "a b")
        __main__.Two = Two
        assert "encodings.idna" not in sys.modules
        data = b"\\x80\\x02cbuiltins\\nstr\\nc__main__\\nTwo\\nC\\x01aX\\x04\\x00\\x00\\x00idna\\x86\\x81R."
        try:
            pickle.loads(data, allowed=[Two])
        except pickle.UnpicklingError as exc:
            print("refused", exc)
        print("imported" if "encodings.idna" in sys.modules else "not imported")
    """)
    assert out.startswith("refused") and out.rstrip().endswith("not imported"), out


class _EqualsEverything(type):
    def __eq__(cls, other):
        return True

    __hash__ = type.__hash__


class Impostor(metaclass=_EqualsEverything):
    pass


def impostor_factory():
    return Impostor


def test_value_types_are_matched_by_identity_not_equality():
    data = b"\x80\x02" + _main_global("impostor_factory") + b")R)R."   # impostor_factory()()
    assert pickle.loads(data).__class__ is Impostor
    with pytest.raises(pickle.UnpicklingError, match="REDUCE of '.*Impostor' is not allowed"):
        fwpickle.loads(data, allowed=[impostor_factory])


def impostor_instance():
    return Impostor()


def test_arguments_are_matched_as_builtin_values_by_identity():
    # set(x) is allowed for builtin containers x; an object whose class's
    # metaclass says it equals list must not pass for one.
    data = (b"\x80\x02cbuiltins\nset\n" + _main_global("impostor_instance") + b")R\x85R.")
    with pytest.raises(pickle.UnpicklingError, match="set\\(\\) of .*Impostor"):
        fwpickle.loads(data, allowed=[impostor_instance])


# --- over a real connection: the server survives and keeps serving ------------------------

ATTACKS = {
    "deep tuple key": deep_tuple_as_dict_key(250_000),
    "shared tuples hashed": shared_tuple_as_dict_key(40),
    "str of shared lists": str_of_shared_lists(30),
    "shared lists returned": lists_filled_after_sharing(30),
}


def test_pipe_receiver_refuses_each_attack_and_keeps_receiving():
    out = run_child("""
        import threading
        from fastwire import net, pickle
        from tests.test_restricted_bounds import ATTACKS as attacks
        a, b = net.Pipe()
        for name, data in attacks.items():
            sender = threading.Thread(target=a.send_bytes, args=(data,))
            sender.start()
            try:
                b.recv()
            except pickle.UnpicklingError:
                print("refused", name)
            sender.join()
            a.send({"after": name})
            assert b.recv() == {"after": name}
        print("served")
    """, timeout=120)
    assert out.count("refused") == len(ATTACKS) and "served" in out, out


def test_listener_server_survives_every_attack_and_keeps_serving():
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from fastwire import net, pickle
        with net.Listener(("127.0.0.1", 0)) as listener:
            print(listener.address[1], flush=True)
            with listener.accept() as conn:
                while True:
                    try:
                        message = conn.recv()
                    except pickle.UnpicklingError as exc:
                        conn.send(("refused", str(exc)[:60]))
                        continue
                    except EOFError:
                        break
                    conn.send(("echo", message))
    """)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with net.Client(("127.0.0.1", port)) as conn:
            for name, data in ATTACKS.items():
                conn.send_bytes(data)
                assert conn.poll(60), name
                verdict, _ = conn.recv()
                assert verdict == "refused", name
                conn.send({"still": "serving"})
                assert conn.recv() == ("echo", {"still": "serving"})
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
        server.wait()


def test_a_connection_applies_the_limits_of_the_allowed_it_was_given():
    a, b = net.Pipe(allowed=fwpickle.Allowed((), max_depth=5))
    with a, b:
        a.send([[[[[1]]]]])                          # 5 deep: within
        assert b.recv() == [[[[[1]]]]]
        a.send([[[[[[1]]]]]])                        # 6 deep: refused, and the stream goes on
        with pytest.raises(pickle.UnpicklingError, match="max_depth=5"):
            b.recv()
        a.send("next")
        assert b.recv() == "next"
