"""Every C kernel of the repo, built once and loaded from a cache.

A kernel is compiled on first use with the machine's C compiler ($CC, split as a shell would: "ccache gcc"
works), once per (sources, flags, compiler and its version, CPU), into $XDG_CACHE_HOME/pruning (else
~/.cache/pruning): every later process loads the library from there without compiling. A library is written
under a temporary name and renamed, so that two processes building at once (pytest-xdist's workers) both end
with a whole one. Where the compiler has no OpenMP (Apple's clang without libomp), the kernel is built
without it and runs on one thread; where there is no compiler at all, load() says why in one line and the
callers take torch's path.

Why a cache of our own, not torch.utils.cpp_extension.load: the kernels are plain C called through ctypes,
each compiled in about a second; cpp_extension compiles C++ against torch's headers (tens of seconds for the
first build, and ninja), to give typed tensors that these calls do not need, as csrc/check.py checks every
tensor before it reaches C.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

SOURCES = Path(__file__).parent

FAST = ("-O3", "-funroll-loops", "-march=native")
FAST_MATH = ("-O3", "-march=native", "-ffast-math")  # -ffast-math: glibc's vector exp and log, which vd and l0 need
OPENMP = "-fopenmp"

P, INT, LONG, I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_int64
# name: (sources, compile flags, link flags, {function: (argument types, return type)}). Compiled and linked
# apart, so that a flag for the code alone (-ffast-math) does not reach the link.
KERNELS = {
    "forward": (("csr_kernel.c", "column_kernel.c"), FAST, (), {
        "csr_forward": ([P, INT, P, LONG, P, P, INT, LONG], None),
        "column_forward": ([P, INT, P, P, P, INT], None),
        "vector_width": ([], INT)}),
    "masked": (("masked_kernel.c",), FAST, (), {
        "masked_product": ([P] * 6 + [LONG, LONG, INT], None),
        "masked_gradient": ([P] * 6 + [LONG, LONG, INT, LONG], None)}),
    "vd": (("vd_kernel.c",), FAST_MATH, ("-lm",), {
        "vd_terms": ([P] * 5 + [I64, INT], ctypes.c_double)}),
    "l0": (("l0_kernel.c",), FAST_MATH, ("-lm",), {
        "l0_gates": ([P] * 6 + [I64, ctypes.c_uint32, INT], ctypes.c_double),
        "l0_backward": ([P] * 5 + [ctypes.c_float, P, P, I64, INT], None)}),
}


def load(name, extra_flags=()):
    """(the library of kernel `name`, "") or (None, why not, in one line), built with $CC; extra_flags follow
    the table's (-mno-avx512f, say, builds for AVX2 on a machine with AVX-512)."""
    return build(name, os.environ.get("CC", "cc"), tuple(extra_flags))


@functools.cache
def build(name, compiler, extra_flags=()):
    """load() with the compiler given as text: one attempt per process, as its answer does not change."""
    sources, flags, link_flags, functions = KERNELS[name]
    try:
        command = shlex.split(compiler)
    except ValueError as e:
        return None, f"CC={compiler!r} cannot be split into words: {e}"
    if not command:
        return None, "CC is empty: set it to a C compiler, or unset it to use cc"
    paths = [SOURCES / source for source in sources]
    flags = [*flags, *extra_flags, "-fPIC"]
    library, why_not = cached(name, command, paths, [*flags, OPENMP], [*link_flags, OPENMP])
    if library is None and not why_not.startswith("no compiler"):
        # Built without OpenMP, a kernel runs on one thread (its pragmas ignored, omp_* stubbed in the source).
        library, _ = cached(name, command, paths, flags, list(link_flags))
        if library is not None:
            warnings.warn(f"the {name} kernel was built without OpenMP, so it runs on one thread: {why_not}",
                          RuntimeWarning, stacklevel=3)
    if library is None:
        return None, why_not
    for function, (arguments, result) in functions.items():
        getattr(library, function).argtypes = arguments
        getattr(library, function).restype = result
    return library, ""


def cached(name, command, sources, flags, link_flags):
    """(library, "") or (None, why not): the library of `sources` from the cache, built there first if need be."""
    version = compiler_version(tuple(command))
    if version is None:
        return None, f"no compiler: {shlex.join(command)} did not run (set CC to a C compiler)"
    key = hashlib.sha256(repr((name, command, version, cpu(), flags, link_flags)).encode())
    for source in sources:
        key.update(source.read_bytes())
    folder = cache_folder()
    library = folder / f"{name}-{key.hexdigest()[:20]}.so"
    if library.is_file():
        try:
            return ctypes.CDLL(str(library)), ""
        except OSError:  # not a library this process can load: build it again over it
            pass
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{name}-", dir=folder)
    except OSError:  # a cache we cannot write: build for this process alone
        folder = None
        work = tempfile.mkdtemp(prefix=f"pruning-{name}-")
    try:
        built, why_not = compile_and_link(command, sources, flags, link_flags, Path(work))
        if built is None:
            return None, why_not
        if folder is None:
            return ctypes.CDLL(str(built)), ""
        os.replace(built, library)  # atomic: a process building beside this one gets a whole library too
        return ctypes.CDLL(str(library)), ""
    except OSError as e:
        return None, f"loading the {name} kernel built from {', '.join(s.name for s in sources)} failed: {e}"
    finally:
        for leftover in Path(work).iterdir():
            leftover.unlink()
        os.rmdir(work)


def compile_and_link(command, sources, flags, link_flags, work):
    """(the library's path in `work`, "") or (None, one line: the failed command and the compiler's output)."""
    objects = [work / f"{source.stem}.o" for source in sources]
    library = work / "library.so"
    steps = [[*command, *flags, "-c", str(source), "-o", str(obj)] for source, obj in zip(sources, objects)]
    steps.append([*command, "-shared", *map(str, objects), "-o", str(library), *link_flags])  # libraries last
    for step in steps:
        try:
            subprocess.run(step, check=True, capture_output=True, text=True, timeout=300)
        except subprocess.CalledProcessError as e:
            return None, f"{shlex.join(step)} failed: {one_line(e.stderr or e.stdout)}"
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"{shlex.join(step)} failed: {e}"
    return library, ""


def one_line(output):
    """The compiler's whole output as one line: its error lines first (the last line of GCC's is often only
    "compilation terminated."), then the rest, each once."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return " | ".join(dict.fromkeys(errors + lines)) or "no output"


@functools.cache
def compiler_version(command):
    """What `command --version` prints, or None where it does not run: part of a build's key, so that a new
    compiler builds afresh."""
    try:
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@functools.cache
def cpu():
    """The CPU, as -march=native sees it: a cache shared by machines (a home folder on a network) keeps a
    build for each."""
    seen = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                seen.setdefault(key.strip(), value.strip())
                if not line.strip():  # the first processor's lines end here
                    break
    except OSError:  # not Linux
        pass
    return (platform.machine(), platform.processor(), sys.platform,
            *(seen.get(key) for key in ("model name", "flags", "Features", "CPU part")))


def cache_folder():
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pruning"


def where(name, device):
    """Where kernel `name`'s work runs on `device`: (its source, "") or ("torch", why not in C)."""
    source = KERNELS[name][0][0]
    if str(device).split(":")[0] != "cpu":
        return "torch", f"{source} runs on the CPU"
    library, why_not = load(name)
    return (source, "") if library is not None else ("torch", why_not)
