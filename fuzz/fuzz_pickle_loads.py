"""Fuzz fastwire.pickle.loads against the standard library's pickle (the oracle).

Input: a control byte, then the pickle. The control byte picks the mode
(0: ``loads(data, allowed=())``, 1: ``loads(data, allowed=[...harmless types])``,
2: an Unpickler subclass whose ``find_class`` only returns harmless types -
``loads`` itself takes no find_class) and the str8 ``encoding``. Whatever the
standard library decodes, fastwire decodes to an equal value; whatever it
rejects, fastwire rejects with an ordinary exception.
"""

import io

import _harness
import _pickle_oracle as oracle

fw_pickle = _harness.import_fastwire_part("pickle")
HarmlessFastwireUnpickler = oracle.make_fastwire_harmless_unpickler(fw_pickle)


def fastwire_loads(mode, data, encoding, errors):
    if mode == 0:
        return fw_pickle.loads(data, allowed=(), encoding=encoding, errors=errors)
    if mode == 1:
        return fw_pickle.loads(data, allowed=oracle.ALLOW_LIST, encoding=encoding, errors=errors)
    return HarmlessFastwireUnpickler(io.BytesIO(data), encoding=encoding, errors=errors).load()


def compare(where, expected, got):
    if got[0] == "error":
        _harness.check_clean_error(got[1], where)
    if expected[0] != got[0]:
        raise AssertionError(f"{where}: stdlib {expected!r}, fastwire {got!r}")
    if expected[0] == "ok" and not _harness.same_value(expected[1], got[1]):
        raise AssertionError(f"{where}: stdlib {expected[1]!r} != fastwire {got[1]!r}")


def test_one_input(data):
    if not data:
        return
    mode = data[0] % 3
    encoding, errors = oracle.ENCODINGS[(data[0] >> 2) % len(oracle.ENCODINGS)]
    payload = data[1:]
    try:
        oracle.refuse_amplification(payload)
    except oracle.KnownAmplification:
        # The stdlib oracle would allocate what the input declares (F3/F4), so
        # only fastwire runs here: it must answer cleanly, without that allocation.
        got = _harness.outcome(fastwire_loads, mode, payload, encoding, errors)
        if got[0] == "error":
            _harness.check_clean_error(got[1], f"mode={mode} amplification input {payload[:64]!r}")
        return
    expected = _harness.outcome(oracle.std_loads, mode, payload, encoding, errors)
    if expected[0] == "error" and isinstance(expected[1], oracle.KnownAmplification):
        return
    got = _harness.outcome(fastwire_loads, mode, payload, encoding, errors)
    compare(f"mode={mode} encoding={encoding} data={payload[:64]!r}", expected, got)


if __name__ == "__main__":
    _harness.main(test_one_input)
