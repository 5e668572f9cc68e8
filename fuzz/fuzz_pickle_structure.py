"""Fuzz fastwire.pickle with pickles built from a recipe: shape, not bytes.

The input is a program for a small pickle builder (``build`` below): each
step reads an operation and its parameters from the input and emits a
well-formed run of opcodes, so libFuzzer's coverage guidance works on the
structure of what is loaded rather than on byte-level validity. The
operations are the ones hostile pickles are made of:

* sharing: memo PUT/GET graphs, ``t(k+1) = (t(k), t(k))`` doublings of tuples
  and lists (memo DAGs, exponential to hash, compare or ``str()``), memo
  indices at the opcode widths (255/256, 65535/65536);
* deep nesting built without recursion: TUPLE1 chains, EMPTY_LIST + APPEND,
  EMPTY_DICT + SETITEM and MARK + FROZENSET chains, up to 2**18 deep;
* work triggered while loading: a structure used as a dict key or set member
  (hashed), passed to ``str``/``bytes``/``bytearray``/``frozenset``;
* calls with tuple-subclass arguments: REDUCE and NEWOBJ whose argument tuple is
  a namedtuple instance (an allowed class), with sizes up to 2**31;
* re-entrant callbacks: an Unpickler subclass whose ``persistent_load``,
  ``find_class`` and file ``read``/``readline``/``readinto``/``peek`` call back
  into the same Unpickler (``load``, ``__init__``, ``memo``) or into ``loads``,
  as a list of actions the input chooses.

Input layout: a mode byte, a count byte ``k`` (mod 17), ``k`` callback
actions, then the recipe (read to the end, at most 200 steps). The mode is
``loads(data, allowed=...)`` or the re-entrant Unpickler, restricted
(``allowed=``) or trusted. Trusted mode runs only where it is safe: its
recipes are clamped (nesting 2,000, doublings 16, small ints), and a recipe
whose shared structure still expands past 65,536 nodes is not run, since
unbounded structure is what restricted mode exists to refuse.

Checks, per input:

* no crash, and any exception is an ordinary one (never SystemError; in
  restricted mode never MemoryError: a restricted load refuses before it
  allocates beyond its budget);
* a work bound: the load finishes within ``work_budget(len(pickle))`` seconds
  (5 s plus 20 us per pickle byte, hundreds of times what a linear decoder
  needs on a loaded machine, while exponential work overruns it by hours), as
  a C-level watchdog (faulthandler) that ends the process with a traceback
  even while C code holds the GIL; and a memory bound: the peak traced
  allocation stays under 256 bytes per pickle byte plus 4 MiB;
* restricted mode imports no module (``str(b, "idna")`` would import
  ``encodings.idna``);
* where the recipe is plain (no hostile operation, no callback), the result
  equals the standard library's (restricted the same way in restricted mode).
"""

import collections
import faulthandler
import io
import os
import resource
import sys
import tracemalloc

import _harness
import _pickle_oracle as oracle

fw_pickle = _harness.import_fastwire_part("pickle")
std_pickle = oracle.std_pickle

Pair = oracle.Pair
ALLOWED = (Pair, collections.OrderedDict)
MODES = ("restricted loads", "restricted Unpickler", "trusted loads", "trusted Unpickler")

MAX_PICKLE = 1 << 20
MAX_STEPS = 200
DEEP_RESTRICTED = 1 << 18
DEEP_TRUSTED = 2000
DOUBLINGS_RESTRICTED = 40
DOUBLINGS_TRUSTED = 16
TRUSTED_SIZE = 1 << 16
MEMORY_PER_BYTE = 256
MEMORY_BASE = 4 << 20

if not os.environ.get("FASTWIRE_SANITIZER_BUILD"):
    # A safety net for the machine, far above the memory bound checked below.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def work_budget(pickle_length):
    """Seconds a load of pickle_length bytes may take (see the module docstring)."""
    return 5 + 20e-6 * pickle_length


# --- the recipe -----------------------------------------------------------------

WORDS = [b"", b"a", b"latin1", b"utf-8", b"idna", b"rot13", b"strict", b"\xc3\xa9"]
GLOBALS = [(b"builtins", b"str"), (b"builtins", b"bytes"), (b"builtins", b"bytearray"),
           (b"builtins", b"frozenset"), (b"builtins", b"set"), (b"builtins", b"complex"),
           (b"builtins", b"tuple"), (b"builtins", b"list"), (b"builtins", b"int"),
           (b"_pickle_oracle", b"Pair"), (b"collections", b"OrderedDict"),
           (b"copyreg", b"_reconstructor"), (b"builtins", b"getattr"), (b"os", b"system")]
HARMFUL = {(b"builtins", b"getattr"), (b"os", b"system")}
MEMO_INDICES = [255, 256, 65535, 65536, 1 << 20]


class Recipe:
    """Emits opcodes while tracking a model of the stack (one kind per item:
    'v' value, 's' str, 'b' bytes, 'L' list, 'D' dict, 'T' tuple, 'S' set,
    'G' global, 'P' namedtuple instance) so every step is well formed."""

    def __init__(self, data, trusted):
        self.input = _harness.Input(data)
        self.trusted = trusted
        self.out = bytearray()
        self.stack = []
        self.shapes = []        # (expanded size, depth) of each stack item
        self.memo = {}          # index -> (kind, shape) of what was PUT there
        self.memo_keys = set()  # what MEMOIZE counts
        self.levels = 0         # doublings so far
        self.depth = 0          # nesting added by chains so far
        self.flagged = False    # set by steps whose result the stdlib cannot be asked for
        self.max_size = self.max_depth = 0
        self.proto = 4 if self.input.byte() & 1 else 2

    @property
    def hostile(self):
        """Work or structure the stdlib oracle cannot be asked to repeat
        (shared structure expands past 10,000 nodes, nesting past 100)."""
        return self.flagged or self.max_size > 10_000 or self.max_depth > 100

    # one opcode run and its effect on the model
    def emit(self, code, pops=0, push=None, shape=None):
        self.out += code
        popped = self.shapes[-pops:] if pops else []
        if pops:
            del self.stack[-pops:]
            del self.shapes[-pops:]
        if popped and shape is None:
            shape = (1 + sum(size for size, _ in popped), 1 + max(depth for _, depth in popped))
        if push:
            self.stack.append(push)
            self.shapes.append(shape or (1, 0))
        elif popped and code != b"0" and self.shapes:
            # APPEND, SETITEM, ADDITEMS: the popped items go into the new top.
            size, depth = self.shapes[-1]
            self.shapes[-1] = (size + shape[0] - 1, max(depth, shape[1]))
        if self.shapes:
            self.max_size = max(self.max_size, self.shapes[-1][0])
            self.max_depth = max(self.max_depth, self.shapes[-1][1])

    def put(self):
        """PUT the top at the next index (MEMOIZE, BINPUT or LONG_BINPUT, as
        the index allows) or at one of the opcode-width boundaries."""
        choice = self.input.byte() % 4
        idx = len(self.memo_keys)
        if choice == 0 and self.proto >= 4:
            self.emit(b"\x94")
        else:
            if choice == 1:
                idx = MEMO_INDICES[self.input.byte() % len(MEMO_INDICES)]
            self.emit(b"q" + bytes([idx]) if idx < 256 else b"r" + idx.to_bytes(4, "little"))
        self.memo_keys.add(idx)
        self.memo[idx] = (self.stack[-1], self.shapes[-1])
        return idx

    def get(self, idx):
        kind, shape = self.memo[idx]
        self.emit(b"h" + bytes([idx]) if idx < 256 else b"j" + idx.to_bytes(4, "little"), push=kind, shape=shape)

    def atom(self):
        kind = self.input.byte() % 7
        if kind == 0:
            self.emit(b"N", push="v")
        elif kind == 1:
            self.emit(b"K" + bytes([self.input.byte()]), push="v")
        elif kind == 2:
            value = self.input.uint(4) & 0x7FFFFFFF
            if self.trusted:
                value &= 0xFFFF
            else:
                self.flagged |= value > 0xFFFF
            self.emit(b"J" + value.to_bytes(4, "little"), push="v")
        elif kind in (3, 4):
            word = WORDS[self.input.byte() % len(WORDS)]
            if self.trusted and word == b"idna":
                word = b"ascii"     # keeps encodings.idna unimported for the restricted check
            op = b"\x8c" if kind == 3 and self.proto >= 4 else b"X" if kind == 3 else b"C"
            self.emit(op + (bytes([len(word)]) if op != b"X" else len(word).to_bytes(4, "little")) + word,
                      push="s" if kind == 3 else "b")
        elif kind == 5:
            self.emit(b"G" + bytes(8), push="v")
        else:
            self.emit(b"\x88", push="v")

    def deep(self):
        shape = self.input.byte() % 4
        limit = DEEP_TRUSTED - self.depth if self.trusted else DEEP_RESTRICTED
        n = min(self.input.uint(3) % (1 << (self.input.byte() % 19)) + 1, limit)
        if n < 1 or 3 * n + len(self.out) > MAX_PICKLE:
            return
        self.depth += n
        if shape == 0:
            if not self.stack:
                self.emit(b")", push="T")
            size, depth = self.shapes[-1]
            self.emit(b"\x85" * n, pops=1, push="T", shape=(size + n, depth + n))
        elif shape == 1:
            self.emit(b"]" * n + b"a" * (n - 1), push="L", shape=(n, n))
        elif shape == 2:
            self.emit(b"}" + b"K\x00}" * (n - 1) + b"s" * (n - 1), push="D", shape=(2 * n, n))
        elif self.proto >= 4:
            self.emit(b"(" * n + b"\x91" * n, push="v", shape=(n, n))

    def doublings(self):
        if not self.stack:
            return
        limit = DOUBLINGS_TRUSTED - self.levels if self.trusted else DOUBLINGS_RESTRICTED
        levels = min(self.input.byte() % 48, limit)
        self.levels += levels
        as_list = self.input.byte() & 1
        for _ in range(levels):
            idx = self.put()
            if as_list:
                self.emit(b"0", pops=1)
                self.emit(b"](", push="L")
                self.get(idx)
                self.get(idx)
                self.emit(b"e", pops=2)
            else:
                self.get(idx)
                self.emit(b"\x86", pops=2, push="T")

    def use_top(self):
        """Make the top do work: a dict key, a set member, a frozenset, str() of it."""
        if not self.stack:
            return
        how = self.input.byte() % 4
        idx = self.put()
        self.emit(b"0", pops=1)
        if how == 0:
            self.emit(b"}", push="D")
            self.get(idx)
            self.emit(b"N", push="v")
            self.emit(b"s", pops=2)
        elif how == 1 and self.proto >= 4:
            self.emit(b"\x8f(", push="S")
            self.get(idx)
            self.emit(b"\x90", pops=1)
        elif how == 2 and self.proto >= 4:
            self.emit(b"(")
            self.get(idx)
            self.emit(b"\x91", pops=1, push="v")
        else:
            self.flagged = True
            self.emit(b"cbuiltins\nstr\n", push="G")
            self.get(idx)
            self.emit(b"\x85R", pops=2, push="s")

    def call(self):
        """GLOBAL f, then REDUCE/NEWOBJ with the top tuple (or namedtuple) as arguments."""
        if not self.stack or self.stack[-1] not in ("T", "P"):
            return
        module, name = GLOBALS[self.input.byte() % len(GLOBALS)]
        if self.trusted and (module, name) in HARMFUL:
            return
        self.flagged |= self.stack[-1] == "P" or name not in (b"Pair", b"frozenset", b"set", b"complex")
        idx = self.put()
        self.emit(b"0", pops=1)
        self.emit(b"c" + module + b"\n" + name + b"\n", push="G")
        self.get(idx)
        newobj = self.input.byte() & 1
        made = "P" if name in (b"Pair", b"_reconstructor") else "v"
        self.emit(b"\x81" if newobj else b"R", pops=2, push=made)

    def global_value(self):
        """A global as a value (a class to hand to copyreg._reconstructor, say)."""
        module, name = GLOBALS[self.input.byte() % len(GLOBALS)]
        if not (self.trusted and (module, name) in HARMFUL):
            self.flagged = True
            self.emit(b"c" + module + b"\n" + name + b"\n", push="v")

    def persistent(self):
        self.flagged = True
        self.emit(b"K" + bytes([self.input.byte()]) + b"Q", push="v")

    def step(self):
        op = self.input.byte() % 13
        top = self.stack[-1] if self.stack else None
        if op < 3:
            self.atom()
        elif op == 3:
            empties = [(b"]", "L"), (b"}", "D"), (b")", "T"), (b"\x8f", "S")]
            opcode, kind = empties[self.input.byte() % (4 if self.proto >= 4 else 3)]
            self.emit(opcode, push=kind)
        elif op == 4 and len(self.stack) >= 2 and self.stack[-2] == "L":
            self.emit(b"a", pops=1)
        elif op == 5 and len(self.stack) >= 3 and self.stack[-3] == "D" and self.stack[-2] in "vsbT":
            self.emit(b"s", pops=2)
        elif op == 6 and self.stack:
            n = min(1 + self.input.byte() % 3, len(self.stack))
            self.emit(b"\x85\x86\x87"[n - 1:n], pops=n, push="T")
        elif op == 7 and self.stack:
            self.put()
        elif op == 8 and self.memo:
            self.get(list(self.memo)[self.input.byte() % len(self.memo)])
        elif op == 9:
            self.deep()
        elif op == 10:
            self.doublings()
        elif op == 11:
            if self.input.byte() & 1:
                self.use_top()
            else:
                self.call()
        elif op == 12:
            which = self.input.byte() % 3
            if which == 0:
                self.persistent()
            elif which == 1 and top is not None:
                self.emit(b"0", pops=1)
            elif which == 2:
                self.global_value()

    def build(self):
        for _ in range(MAX_STEPS):
            if self.input.pos >= len(self.input.data) or len(self.out) > MAX_PICKLE:
                break
            self.step()
        if not self.stack:
            self.emit(b"N", push="v")
        while len(self.stack) > 1:
            if self.stack[-2] == "L":
                self.emit(b"a", pops=1)
            else:
                self.emit(b"\x86", pops=2, push="T")
        return bytes([0x80, self.proto]) + bytes(self.out) + b"."


def build(data, trusted):
    """(pickle, hostile, safe to load trusted) for a recipe."""
    recipe = Recipe(data, trusted)
    pickled = recipe.build()
    return pickled, recipe.hostile, recipe.max_size <= TRUSTED_SIZE and recipe.max_depth <= DEEP_TRUSTED


# --- re-entrant callbacks -----------------------------------------------------------

INNER = std_pickle.dumps(["inner", (1, 2)], 4)


class Callbacks:
    """Actions the callbacks take, in order, one per call; then they do nothing."""

    def __init__(self, actions, allowed):
        self.actions = list(actions[:16])
        self.allowed = allowed

    def run(self, unpickler):
        if not self.actions:
            return
        action = self.actions.pop(0) % 9
        if action == 1:
            unpickler.load()
        elif action == 2:
            fw_pickle.loads(INNER, allowed=self.allowed) if self.allowed is not None else fw_pickle.loads(INNER)
        elif action == 3:
            kwargs = {} if self.allowed is None else {"allowed": self.allowed}
            unpickler.__init__(io.BytesIO(INNER), **kwargs)
        elif action == 4:
            unpickler.memo.clear()
        elif action == 5:
            unpickler.memo = {0: "replaced", 300: "sparse"}
        elif action == 6:
            raise ValueError("callback refused")
        elif action == 7:
            unpickler.persistent_load = lambda pid: ("replaced", pid)
        elif action == 8:
            nested = type(unpickler)(CallbackFile(INNER, self), **(
                {} if self.allowed is None else {"allowed": self.allowed}))
            nested.callbacks = self
            nested.load()


class CallbackFile:
    def __init__(self, data, callbacks):
        self.stream = io.BytesIO(data)
        self.callbacks = callbacks
        self.unpickler = None

    def _call(self):
        if self.unpickler is not None:
            self.callbacks.run(self.unpickler)

    def read(self, n=-1):
        self._call()
        return self.stream.read(n)

    def readline(self):
        self._call()
        return self.stream.readline()

    def readinto(self, buffer):
        self._call()
        return self.stream.readinto(buffer)

    def peek(self, n=0):
        self._call()
        position = self.stream.tell()
        chunk = self.stream.read(max(n, 1))
        self.stream.seek(position)
        return chunk


class ReentrantUnpickler(fw_pickle.Unpickler):
    callbacks = None

    def persistent_load(self, pid):
        self.callbacks.run(self)
        return pid

    def find_class(self, module, name):
        self.callbacks.run(self)
        return super().find_class(module, name)


# --- one input --------------------------------------------------------------------

def fastwire_load(mode, pickled, actions):
    if mode == 0:
        return fw_pickle.loads(pickled, allowed=ALLOWED)
    if mode == 2:
        return fw_pickle.loads(pickled)
    allowed = ALLOWED if mode == 1 else None
    callbacks = Callbacks(actions, allowed)
    file = CallbackFile(pickled, callbacks)
    unpickler = ReentrantUnpickler(file, **({} if allowed is None else {"allowed": allowed}))
    unpickler.callbacks = callbacks
    file.unpickler = unpickler
    return unpickler.load()


def stdlib_load(mode, pickled):
    if mode == 0:
        globals_ = oracle.VALUE_GLOBALS | {("_pickle_oracle", "Pair"), ("collections", "OrderedDict")}
        return oracle.RestrictedStdUnpickler(io.BytesIO(pickled), globals_).load()
    return std_pickle.loads(pickled)


def bounded(fn, *args):
    """outcome(fn, *args) and the peak of what it allocated, under the work budget.

    tracemalloc runs for the whole session instead of being started and stopped
    around each input: the faulthandler watchdog thread frees its state through
    tracemalloc's hooks as it exits, and a tracemalloc.stop() racing that free
    crashes CPython before 3.12.9 and 3.13.2 (gh-128679; it killed this target
    on 3.11.7 at its 1,542nd input, in tracemalloc_free on the watchdog thread).
    """
    if not tracemalloc.is_tracing():
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = _harness.outcome(fn, *args)
    return result, tracemalloc.get_traced_memory()[1] - before


def test_one_input(data):
    if not data:
        return
    mode = data[0] % len(MODES)
    restricted = mode in (0, 1)
    actions = data[2:2 + data[1] % 17] if len(data) > 1 else b""
    pickled, hostile, safe = build(data[2 + len(actions):], trusted=not restricted)
    if not (restricted or safe):
        return      # unbounded structure is what only restricted mode must survive
    where = f"{MODES[mode]}, pickle of {len(pickled)} bytes {pickled[:80]!r}"

    modules_before = set(sys.modules)
    faulthandler.dump_traceback_later(work_budget(len(pickled)), exit=True)
    try:
        got, peak = bounded(fastwire_load, mode, pickled, actions)
    finally:
        faulthandler.cancel_dump_traceback_later()
    imported = set(sys.modules) - modules_before

    if got[0] == "error":
        _harness.check_clean_error(got[1], where)
        if restricted and isinstance(got[1], MemoryError):
            raise AssertionError(f"{where}: restricted load allocated past the machine's limit") from got[1]
    if peak > MEMORY_PER_BYTE * len(pickled) + MEMORY_BASE:
        raise AssertionError(f"{where}: peak allocation {peak} bytes, over the bound "
                             f"{MEMORY_PER_BYTE} x {len(pickled)} + {MEMORY_BASE}")
    if restricted and imported:
        raise AssertionError(f"{where}: restricted load imported {sorted(imported)}")
    if hostile or mode in (1, 3):
        return
    expected = _harness.outcome(stdlib_load, mode, pickled)
    if expected[0] != got[0] or (expected[0] == "ok" and not _harness.same_value(expected[1], got[1])):
        raise AssertionError(f"{where}: stdlib {expected!r}, fastwire {got!r}")


if __name__ == "__main__":
    _harness.main(test_one_input)
