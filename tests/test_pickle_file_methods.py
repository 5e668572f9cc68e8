"""How dump(obj, file) and load(file) find and call the file's methods.

Each call looks the methods up once, at its start, in the stdlib's order
(load: peek, readinto, read, readline; dump: write), and calls what it found
for the whole call, as the stdlib calls the bound methods it made then (dump
without making a bound-method object for write), with the same results when
the file's methods are not plain methods, or are replaced, deleted or stop
existing while the call runs. The stdlib's pickle.load / pickle.dump on the
same kind of file is the oracle throughout.
"""

from __future__ import annotations

import gc
import io
import pickle as std

import pytest

from fastwire import pickle as fw

SMALL = {"id": 12345, "name": "fastwire", "score": 3.25, "tags": ["a", "b"]}
# Several 64 KiB frames (several writes, several reads) and large payloads
# (written by a write of their own; read in chunks, or through readinto).
# Each part is also held here: fastwire leaves objects nothing else refers to
# out of the memo, so only shared ones give the stdlib's exact bytes.
_PARTS = (b"x" * 200_000, "y" * 100_000, list(range(30_000)))
LARGE = list(_PARTS)
PICKLES = [std.dumps(SMALL, 5), std.dumps(SMALL, 2), std.dumps(SMALL, 0), std.dumps(LARGE, 5)]
IDS = ["small p5", "small p2", "small p0", "large p5"]


def _outcome(call):
    try:
        return ("value", call())
    except Exception as exc:  # noqa: BLE001 - the stdlib's exception type is the oracle
        return ("raises", type(exc))


# --- the order and number of lookups -------------------------------------------------

def _logging_reader_class():
    class LoggingReader:
        """Every method is reached through a property that logs the lookup."""

        def __init__(self, data):
            self.raw = io.BufferedReader(io.BytesIO(data), 8192)
            self.log = []

        def _get(name):
            def get(self):
                self.log.append(name)
                return getattr(self.raw, name)
            return property(get)

        peek = _get("peek")
        readinto = _get("readinto")
        read = _get("read")
        readline = _get("readline")
    return LoggingReader


@pytest.mark.parametrize("data", PICKLES, ids=IDS)
def test_load_looks_up_the_file_methods_once_in_the_stdlib_order(data):
    cls = _logging_reader_class()
    theirs, ours = cls(data + b"tail"), cls(data + b"tail")
    assert fw.load(ours) == std.load(theirs)
    assert ours.log == theirs.log == ["peek", "readinto", "read", "readline"]
    assert ours.raw.read() == theirs.raw.read() == b"tail"


@pytest.mark.parametrize("obj", [SMALL, LARGE], ids=["small", "large"])
def test_dump_looks_up_write_once(obj):
    class LoggingWriter:
        def __init__(self):
            self.raw = io.BytesIO()
            self.lookups = 0

        @property
        def write(self):
            self.lookups += 1
            return self.raw.write

    theirs, ours = LoggingWriter(), LoggingWriter()
    std.dump(obj, theirs, 5)
    fw.dump(obj, ours, 5)
    assert ours.raw.getvalue() == theirs.raw.getvalue()
    assert ours.lookups == theirs.lookups == 1


# --- methods that are not plain methods of the file's class ---------------------------

class _Base:
    def __init__(self, data=b""):
        self.buf = io.BytesIO(data)


class InstanceAttributes(_Base):
    """Methods stored on the instance (shadowing nothing)."""

    def __init__(self, data=b""):
        super().__init__(data)
        self.read = self.buf.read
        self.readline = self.buf.readline
        self.write = self.buf.write


class ShadowedByInstance(_Base):
    """The class has methods that must not be called: the instance's win."""

    def __init__(self, data=b""):
        super().__init__(data)
        self.read = self.buf.read
        self.readline = self.buf.readline
        self.write = self.buf.write

    def read(self, n=-1):
        raise AssertionError("the class's read was called")

    def readline(self):
        raise AssertionError("the class's readline was called")

    def write(self, data):
        raise AssertionError("the class's write was called")


class _CallableReader:
    def __call__(self, *args):
        raise AssertionError("not bound: called without the file")

    def __get__(self, obj, owner=None):
        return obj.buf.read if obj is not None else self


class DescriptorMethods(_Base):
    """read is a non-function descriptor; readline a staticmethod reaching a
    global; write a classmethod."""

    read = _CallableReader()
    current = None

    @staticmethod
    def readline():
        return DescriptorMethods.current.buf.readline()

    @classmethod
    def write(cls, data):
        return cls.current.buf.write(data)


class GetattrMethods:
    """Methods from __getattr__ only."""

    def __init__(self, data=b""):
        self._buf = io.BytesIO(data)

    def __getattr__(self, name):
        if name in ("read", "readline", "write", "peek", "readinto"):
            return getattr(self._buf, name)
        raise AttributeError(name)


class GetattributeMethods(io.BytesIO):
    """A __getattribute__ that hands out other callables than the class's own."""

    def __getattribute__(self, name):
        if name == "read":
            return lambda n=-1: io.BytesIO.read(self, n)
        if name == "write":
            return lambda data: io.BytesIO.write(self, data)
        return super().__getattribute__(name)

    def read(self, n=-1):
        raise AssertionError("the class's read was called")

    def write(self, data):
        raise AssertionError("the class's write was called")


FILE_KINDS = [InstanceAttributes, ShadowedByInstance, DescriptorMethods, GetattrMethods]


def _position(f):
    buf = f.buf if hasattr(f, "buf") else f._buf
    return buf.tell()


@pytest.mark.parametrize("kind", FILE_KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("data", PICKLES, ids=IDS)
def test_load_through_methods_that_are_not_plain_methods(kind, data):
    results = []
    for load in (std.load, fw.load):
        f = kind(data + b"tail")
        DescriptorMethods.current = f
        results.append((_outcome(lambda: load(f)), _position(f)))
    assert results[1] == results[0]
    assert results[0][0][0] == "value"


@pytest.mark.parametrize("kind", FILE_KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("obj", [SMALL, LARGE], ids=["small", "large"])
def test_dump_through_methods_that_are_not_plain_methods(kind, obj):
    outputs = []
    for dump in (std.dump, fw.dump):
        f = kind()
        DescriptorMethods.current = f
        dump(obj, f, 5)
        outputs.append((f.buf if hasattr(f, "buf") else f._buf).getvalue())
    assert outputs[1] == outputs[0] == std.dumps(obj, 5)


@pytest.mark.parametrize("data", PICKLES, ids=IDS)
def test_getattribute_override_is_honoured(data):
    results = []
    for load, dump in ((std.load, std.dump), (fw.load, fw.dump)):
        f = GetattributeMethods(data + b"tail")
        loaded = _outcome(lambda: load(f))
        g = GetattributeMethods()
        dump(SMALL, g, 5)
        results.append((loaded, io.BytesIO.read(f), g.getvalue()))
    assert results[1] == results[0]
    assert results[0][0][0] == "value"


# --- lookups that fail ----------------------------------------------------------------

def _reader_with_failing(name, exc):
    class Failing(io.BufferedReader):
        pass

    def get(self):
        raise exc(name)
    setattr(Failing, name, property(get))
    return Failing


@pytest.mark.parametrize("name", ["peek", "readinto", "read", "readline"])
@pytest.mark.parametrize("exc", [AttributeError, ValueError, KeyError])
def test_load_lookup_errors_match_stdlib(name, exc):
    """A lookup raising AttributeError means "no such method" (peek and
    readinto are optional, read and readline are not: TypeError); any other
    exception propagates."""
    data = std.dumps(SMALL, 5) + b"tail"
    outcomes = []
    for load in (std.load, fw.load):
        f = _reader_with_failing(name, exc)(io.BytesIO(data))
        outcomes.append((_outcome(lambda: load(f)), io.BufferedReader.read(f)))
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize("exc", [AttributeError, ValueError])
def test_dump_lookup_errors_match_stdlib(exc):
    class Failing:
        @property
        def write(self):
            raise exc("write")

    assert _outcome(lambda: fw.dump(SMALL, Failing(), 5)) == _outcome(lambda: std.dump(SMALL, Failing(), 5))


# --- methods replaced or deleted while the call runs ---------------------------------

def _self_replacing_reader_class(how):
    """A reader whose first peek (or, without peek, first read) replaces or
    deletes the methods on the instance or on its class: the call keeps
    calling what it looked up at its start."""
    class Replacing(io.BufferedReader):
        done = False

        def _replace(self):
            if type(self).done:
                return
            type(self).done = True
            cls = type(self)
            if how == "instance":
                self.read = self.readline = self.peek = self.readinto = _refuse
            elif how == "class":
                cls.read = cls.readline = cls.peek = cls.readinto = _refuse
            else:
                del cls.read, cls.readline, cls.peek, cls.readinto
            gc.collect()

        def peek(self, n=0):
            self._replace()
            return super().peek(n)

        def read(self, n=-1):
            self._replace()
            return super().read(n)

        def readinto(self, b):
            self._replace()
            return super().readinto(b)

        def readline(self, size=-1):
            self._replace()
            return super().readline(size)
    return Replacing


def _refuse(*args):
    raise AssertionError("a replacement method was called within the same call")


@pytest.mark.parametrize("via", ["load", "Unpickler"])
@pytest.mark.parametrize("how", ["instance", "class", "delete"])
@pytest.mark.parametrize("data", PICKLES, ids=IDS)
def test_load_keeps_the_methods_it_looked_up_when_the_file_replaces_them(how, data, via):
    """load() keeps them for its call; an Unpickler, for its life (its second
    load still reads through the methods found when it was made)."""
    outcomes = []
    for module in (std, fw):
        f = _self_replacing_reader_class(how)(io.BytesIO(data * 2 + b"tail"), 8192)
        if via == "load":
            loaded = [_outcome(lambda: module.load(f))]
        else:
            unpickler = module.Unpickler(f)
            loaded = [_outcome(unpickler.load), _outcome(unpickler.load)]
        outcomes.append((loaded, io.BufferedReader.read(f)))
    assert outcomes[1] == outcomes[0]
    value = ("value", std.loads(data))
    assert outcomes[0] == (([value] if via == "load" else [value, value]),
                           (data if via == "load" else b"") + b"tail")


@pytest.mark.parametrize("how", ["instance", "class", "delete"])
@pytest.mark.parametrize("obj", [SMALL, LARGE], ids=["small", "large"])
def test_dump_keeps_the_write_it_looked_up_when_the_pickled_object_replaces_it(how, obj):
    """A __reduce__ (user code run mid-dump) replaces or deletes file.write:
    the stdlib keeps writing through the bound method it made at the start."""
    outputs = []
    for dump in (std.dump, fw.dump):
        class Writer(io.BytesIO):
            def write(self, data):
                return super().write(data)

        f = Writer()

        class Replacer:
            def __reduce__(self):
                if how == "instance":
                    f.write = _refuse
                elif how == "class":
                    Writer.write = _refuse
                else:
                    del Writer.write
                gc.collect()
                return (int, (7,))

        dump([obj, Replacer(), obj], f, 5)
        outputs.append(f.getvalue())
    assert outputs[1] == outputs[0]
    assert std.loads(outputs[0]) == [obj, 7, obj]


def test_load_from_a_file_only_the_call_holds_whose_class_goes_away():
    """The file, its class and its methods are held by the call alone: the
    peek drops the class's last references to them."""
    def make():
        class Vanishing(io.BufferedReader):
            def peek(self, n=0):
                cls = type(self)
                if "peek" in vars(cls):
                    del cls.peek, cls.read
                    gc.collect()
                return super().peek(n)

            def read(self, n=-1):
                return super().read(n)
        return Vanishing(io.BytesIO(std.dumps(SMALL, 5) * 2))

    assert fw.load(make()) == SMALL
    assert std.load(make()) == SMALL


def test_dump_to_a_writer_only_the_call_holds_whose_class_goes_away():
    def make():
        class Vanishing:
            def write(self, data):
                if "write" in vars(type(self)):
                    del type(self).write
                    gc.collect()
                return len(data)
        return Vanishing()

    fw.dump(LARGE, make(), 5)
    std.dump(LARGE, make(), 5)
