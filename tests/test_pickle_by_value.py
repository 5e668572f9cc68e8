"""fastwire.pickle.dumps(..., by_value=...): classes and functions by value, instances
by the compiled encoder.

The by-value side is cloudpickle's (a ``cloudpickle.Pickler`` is a valid
``by_value``); the oracles are the standard library's ``pickle.loads`` and a
fresh interpreter that has never imported the defining module.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import subprocess
import sys
import textwrap
import types

import pytest

cloudpickle = pytest.importorskip("cloudpickle", reason="by_value is tested with cloudpickle's reducers")

from fastwire import pickle as fw  # noqa: E402

SCRIPT = textwrap.dedent('''
    import dataclasses

    SCALE = 3

    @dataclasses.dataclass
    class Ledger:
        account: int
        name: str
        amount: float

        def doubled(self):
            return Ledger(self.account, self.name, self.amount * 2)

    class Track:
        def __init__(self, points):
            self.points = points

        def total(self):
            return sum(p[1] for p in self.points)

    def make_scaler(factor):
        def scaler(x):
            return x * factor * SCALE
        return scaler

    def countdown(n):
        return 0 if n == 0 else countdown(n - 1) + 1

    def is_ledger(value):
        return isinstance(value, Ledger)

    square = lambda x: x * x
''')


@pytest.fixture
def script():
    """A module made from SCRIPT, importable here but registered to travel by value
    (what cloudpickle does for ``__main__``): no other process can import it."""
    module = types.ModuleType("fastwire_by_value_script")
    sys.modules[module.__name__] = module
    exec(compile(SCRIPT, "<script>", "exec"), module.__dict__)
    cloudpickle.register_pickle_by_value(module)
    yield module
    cloudpickle.unregister_pickle_by_value(module)
    del sys.modules[module.__name__]


def by_value():
    return cloudpickle.Pickler(io.BytesIO(), protocol=5)


class CountingByValue:
    """cloudpickle's reducers, counting what the encoder offers them."""

    def __init__(self):
        self.inner = by_value()
        self.dispatch_table = self.inner.dispatch_table
        self.offered = collections.Counter()

    def reducer_override(self, obj):
        self.offered[obj] += 1
        return self.inner.reducer_override(obj)


def sample(script):
    return {
        "rows": [script.Ledger(i, f"n{i}", i * 0.5) for i in range(1000)],
        "track": script.Track([(i, i * 0.25, "t") for i in range(500)]),
        "scaler": script.make_scaler(2),
        "countdown": script.countdown,
        "is_ledger": script.is_ledger,
        "square": script.square,
    }


CHECK = textwrap.dedent('''
    import pickle, sys
    import fastwire.pickle
    data = sys.stdin.buffer.read()
    assert "fastwire_by_value_script" not in sys.modules
    for value in (pickle.loads(data), fastwire.pickle.loads(data)):
        rows, track = value["rows"], value["track"]
        assert type(rows[0]).__module__ == "fastwire_by_value_script"
        assert all(type(r) is type(rows[0]) for r in rows)
        assert value["is_ledger"](rows[7]) and rows[7].doubled().amount == 7.0
        assert rows[3] == type(rows[0])(3, "n3", 1.5)
        assert track.total() == sum(i * 0.25 for i in range(500))
        assert value["scaler"](5) == 30 and value["countdown"](4) == 4 and value["square"](9) == 81
    print("ok")
''')


def load_elsewhere(data: bytes) -> str:
    """Load ``data`` in a fresh interpreter that never saw the defining module."""
    done = subprocess.run([sys.executable, "-c", CHECK], input=data, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_classes_and_functions_load_in_an_interpreter_without_their_module(script, protocol):
    data = fw.dumps(sample(script), protocol, by_value=by_value())
    assert load_elsewhere(data) == "ok"


def test_each_class_and_function_is_offered_once_per_pickle_not_per_instance(script):
    counting = CountingByValue()
    fw.dumps(sample(script), 5, by_value=counting)
    assert counting.offered[script.Ledger] == 1 and counting.offered[script.Track] == 1
    assert counting.offered[script.is_ledger] == 1
    assert set(counting.offered.values()) == {1}
    # A second pickle starts with a fresh memo: offered again, once.
    fw.dumps([script.Ledger(1, "a", 1.0)] * 3, 5, by_value=counting)
    assert counting.offered[script.Ledger] == 2


def test_a_class_is_written_once_and_referenced_from_the_memo(script):
    data = fw.dumps([script.Ledger(i, "n", 1.0) for i in range(100)], 5, by_value=by_value())
    skeletons = [arg for op, arg, _ in pickletools.genops(data) if arg == "_make_skeleton_class"]
    assert len(skeletons) == 1


def test_functions_and_instances_share_one_class_on_arrival(script):
    value = fw.loads(fw.dumps(sample(script), 5, by_value=by_value()))
    assert value["is_ledger"](value["rows"][0])  # the function's global is the rows' class
    assert value["rows"][0].doubled().__class__ is value["rows"][0].__class__


def test_not_implemented_everywhere_gives_the_plain_pickle():
    import fractions

    class Never:
        dispatch_table = {}

        def reducer_override(self, obj):
            return NotImplemented

    value = [fractions.Fraction(1, 3), {"a": (1, 2.5, "x")}, collections.OrderedDict(b=2)]
    assert fw.dumps(value, 5, by_value=Never()) == fw.dumps(value, 5)
    assert pickle.loads(fw.dumps(value, 5, by_value=Never())) == value


def test_dispatch_table_applies_only_inside_by_value_reductions(script):
    class Marker:
        pass

    seen = []

    def reduce_marker(obj):
        seen.append(obj)
        return Marker, ()

    table = collections.ChainMap({collections.OrderedDict: reduce_marker}, cloudpickle.Pickler.dispatch_table)
    inner = by_value()

    class WithTable:
        dispatch_table = table

        def reducer_override(self, obj):
            return inner.reducer_override(obj)

    script.Ledger.registry = collections.OrderedDict(a=1)  # a class attribute: inside the class's value
    try:
        data = fw.dumps([collections.OrderedDict(b=2), script.Ledger(1, "x", 1.0)], 5, by_value=WithTable())
    finally:
        del script.Ledger.registry
    assert len(seen) == 1 and seen[0] == {"a": 1}
    outside, row = pickle.loads(data)
    assert outside == collections.OrderedDict(b=2) and isinstance(type(row).registry, Marker)


def test_by_value_needs_protocol_2():
    for protocol in (0, 1):
        with pytest.raises(ValueError, match="by_value needs protocol >= 2"):
            fw.dumps([1], protocol, by_value=by_value())


def test_restricted_loads_refuses_by_value_pickles_by_default(script):
    data = fw.dumps([script.Ledger(1, "a", 2.0)], 5, by_value=by_value())
    with pytest.raises(pickle.UnpicklingError, match="cloudpickle"):
        fw.loads(data, allowed=[])


# --- the reducer is user code: it may raise, re-enter, mutate ------------------

class Hostile:
    """A by_value whose reducer_override does ``action`` before answering."""

    dispatch_table = cloudpickle.Pickler.dispatch_table

    def __init__(self, action):
        self.action = action
        self.inner = by_value()

    def reducer_override(self, obj):
        result = self.action(self, obj)
        return self.inner.reducer_override(obj) if result is None else result


def test_reducer_override_that_raises_reenters_mutates_or_loops(script):
    rows = [script.Ledger(i, "n", 1.0) for i in range(50)]

    def fail(self, obj):
        raise KeyError("refused")

    with pytest.raises(KeyError, match="refused"):
        fw.dumps(rows, 5, by_value=Hostile(fail))

    def reenter(self, obj):  # the same value and by_value, from inside the dump
        assert load_is_rows(fw.dumps(rows, 5, by_value=by_value()))

    def load_is_rows(data):
        return [r.account for r in pickle.loads(data)] == list(range(50))

    assert load_is_rows(fw.dumps(rows, 5, by_value=Hostile(reenter)))

    def mutate(self, obj):  # empties the list being written and swaps the hooks
        rows.clear()
        self.dispatch_table = None
        self.reducer_override = None

    data = fw.dumps(rows, 5, by_value=Hostile(mutate))
    assert [type(r).__name__ for r in pickle.loads(data)] == ["Ledger"]  # the item already held

    def itself(self, obj):  # a reduction that contains the object it reduces
        return (type, (obj,))

    with pytest.raises(RecursionError):
        fw.dumps([script.Ledger(1, "a", 1.0)], 5, by_value=Hostile(itself))

    def nonsense(self, obj):
        return 42

    with pytest.raises(pickle.PicklingError, match="string or tuple"):
        fw.dumps([script.Ledger(1, "a", 1.0)], 5, by_value=Hostile(nonsense))


def test_regression_by_value_nesting_is_bounded_before_the_c_stack_runs_out():
    # A reducer whose every reduction holds another class to reduce crashed
    # CPython 3.13 (C stack overflow near 6,500 levels: each level re-enters
    # Python from C, which 3.13 counts against its 10,000-deep C limit only).
    class Nested:
        pass

    class Endless:
        dispatch_table = None

        def reducer_override(self, obj):
            return (type, ("Nested", (type("Deeper", (), {}),), {}))

    with pytest.raises(RecursionError, match="nested more than 500 deep"):
        fw.dumps([Nested], 5, by_value=Endless())


def test_a_chain_of_functions_each_calling_the_next_travels_by_value():
    chain = types.ModuleType("fastwire_by_value_chain")
    source = "".join(f"def f{i}(x):\n    return f{i + 1}(x + 1)\n" for i in range(100))
    exec(source + "def f100(x):\n    return x\n", chain.__dict__)
    sys.modules[chain.__name__] = chain
    cloudpickle.register_pickle_by_value(chain)
    try:
        data = fw.dumps(chain.f0, 5, by_value=by_value())  # 100 reductions, one inside the next
    finally:
        cloudpickle.unregister_pickle_by_value(chain)
        del sys.modules[chain.__name__]
    assert pickle.loads(data)(0) == 100
