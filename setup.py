"""Build definition for the compiled core; all metadata lives in pyproject.toml.

Environment switches (one build system, several builds):
  FASTWIRE_DEBUG=1     -O0 -g, C asserts on, Cython refnanny-free debug symbols.
  FASTWIRE_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer (use clang;
                       run Python with the ASan runtime preloaded).
  FASTWIRE_ANNOTATE=1  also write src/_fastwire.html (cython -a) to find Python
                       objects in hot loops.
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FASTWIRE_DEBUG") == "1"
sanitize = os.environ.get("FASTWIRE_SANITIZE") == "1"

if sys.platform == "win32":
    compile_args = ["/O2"]
    link_args = []
else:
    compile_args = ["-O0", "-g", "-UNDEBUG"] if debug else ["-O3"]
    link_args = []
    if sanitize:
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
        compile_args += flags
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
        # Directives live in the header of src/_fastwire.pyx, next to the code they govern.
    ),
)
