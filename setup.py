"""Build definition for the compiled core; all metadata lives in pyproject.toml.

Environment switches (one build system, several builds):
  FASTWIRE_DEBUG=1     -O0 -g, C asserts on, Cython refnanny-free debug symbols.
  FASTWIRE_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer, built with
                       clang (the default compiler for this build; CC overrides).
                       Python must run with clang's ASan runtime preloaded:
                       scripts/sanitize-build and scripts/sanitize-run do both.
  FASTWIRE_SANITIZE=fuzz  the same plus libFuzzer coverage counters, for the
                       atheris targets in fuzz/ (which load atheris first so the
                       counters have somewhere to go).
  FASTWIRE_ANNOTATE=1  also write src/_fastwire.html (cython -a) to find Python
                       objects in hot loops.
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FASTWIRE_DEBUG") == "1"
sanitize = os.environ.get("FASTWIRE_SANITIZE", "")
if sanitize not in ("", "0", "1", "fuzz"):
    sys.exit(f"FASTWIRE_SANITIZE must be 1 or fuzz, not {sanitize!r}")
sanitize = "" if sanitize == "0" else sanitize

if sys.platform == "win32":
    compile_args = ["/O2"]
    link_args = []
else:
    compile_args = ["-O0", "-g", "-UNDEBUG"] if debug else ["-O3"]
    link_args = []
    if sanitize:
        # clang, because the fuzzers' libFuzzer (atheris) and the preloaded ASan
        # runtime are clang's; a gcc-instrumented module needs gcc's libasan.
        # setuptools derives the linker from CC when LDSHARED is unset.
        os.environ.setdefault("CC", "clang")
        checks = ["address", "undefined"] + (["fuzzer-no-link"] if sanitize == "fuzz" else [])
        flags = [
            "-fsanitize=" + ",".join(checks),
            # Undefined behaviour aborts (a fuzzer crash / a failed test), never
            # just a line on stderr that nobody reads.
            "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer",
            "-g",
        ]
        # -O1: readable ASan stack traces at a usable speed (after -O3 above).
        compile_args += flags + ([] if debug else ["-O1"])
        link_args += flags

extension = Extension(
    "fastwire._fastwire",
    sources=["src/_fastwire.pyx"],
    include_dirs=["src/_fastwire"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(
    ext_modules=cythonize(
        [extension],
        annotate=os.environ.get("FASTWIRE_ANNOTATE") == "1",
        # The parts cimport the shared .pxd files by name (src/_fastwire/), and
        # the module's own .pxd is found as fastwire/_fastwire.pxd (src/).
        include_path=["src/_fastwire", "src"],
        # Directives live in the header of src/_fastwire.pyx, next to the code they govern.
    ),
)
