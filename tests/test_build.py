"""csrc/build.py: each kernel compiled once into a cache outside the clone and loaded from there by every later
process; $CC split as a shell would; OpenMP dropped, not the kernel, where the compiler lacks it; the compiler's
whole error in the one-line note."""
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from csrc import build
from sparse_training import vd

pytestmark = pytest.mark.skipif(build.load("vd")[0] is None, reason=f"no kernel builds here: {build.load('vd')[1]}")


def compiler(tmp_path, name, body):
    """A compiler script: logs its arguments to <name>.log, then runs `body` (sh), which ends by calling cc."""
    path = tmp_path / name
    path.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / name}.log"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of the test's own, and a process that has built nothing yet."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    build.build.cache_clear()
    yield tmp_path / "cache" / "pruning"
    build.build.cache_clear()


def compiles(log):
    """The compile and link commands a compiler script ran (not its --version)."""
    return [line for line in log.read_text().splitlines() if line != "--version"] if log.exists() else []


def assert_vd_terms_right(library):
    theta, log_sigma2 = torch.randn(30, 20), torch.rand(30, 20) * 4 - 6
    variance, kl = vd.VariationalTerms.apply(theta, log_sigma2, library)
    torch.testing.assert_close(variance, log_sigma2.exp(), rtol=1e-5, atol=0)
    expected = vd.vd_kl(log_sigma2 - torch.log(theta ** 2 + 1e-8)).sum()
    assert kl.item() == pytest.approx(expected.item(), rel=1e-5)


def test_processes_building_at_once_all_succeed_and_a_later_one_compiles_nothing(cache, tmp_path):
    cc = compiler(tmp_path, "cc-logged", 'exec cc "$@"')
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache.parent), "CC": str(cc)}
    code = "from csrc import build; library, why = build.load('vd'); assert library, why"
    racing = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=environment, stderr=subprocess.PIPE,
                               text=True) for _ in range(3)]
    for process in racing:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    assert [p.suffix for p in cache.iterdir()] == [".so"]  # one library, no temporary file or folder left
    log = tmp_path / "cc-logged.log"
    built = len(compiles(log))
    assert built >= 2  # a compile and a link, at least once
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(compiles(log)) == built  # loaded from the cache


def test_a_changed_flag_or_compiler_builds_afresh(cache, tmp_path, monkeypatch):
    assert build.load("vd")[0] is not None
    assert build.load("vd", ("-DANOTHER_BUILD",))[0] is not None
    monkeypatch.setenv("CC", str(compiler(tmp_path, "cc-other", 'exec cc "$@"')))
    assert build.load("vd")[0] is not None
    assert len(list(cache.glob("vd-*.so"))) == 3


def test_cc_is_split_into_words_as_a_shell_would(cache, tmp_path, monkeypatch):
    folder = tmp_path / "a folder"
    folder.mkdir()
    cc = compiler(folder, "my cc", 'exec cc "$@"')
    monkeypatch.setenv("CC", f"'{cc}' -DFROM_CC")
    library, why_not = build.load("vd")
    assert library is not None, why_not
    assert all("-DFROM_CC" in line for line in compiles(folder / "my cc.log"))
    assert_vd_terms_right(library)


def test_a_compiler_without_openmp_builds_the_kernel_without_it(cache, tmp_path, monkeypatch):
    cc = compiler(tmp_path, "cc-no-openmp", 'case " $* " in *" -fopenmp "*) echo "clang: error: unsupported option '
                                            "'-fopenmp'\" >&2; exit 1;; esac\nexec cc \"$@\"")
    monkeypatch.setenv("CC", str(cc))
    with pytest.warns(RuntimeWarning, match="built without OpenMP, so it runs on one thread: .*unsupported option"):
        library, why_not = build.load("vd")
    assert library is not None, why_not
    assert_vd_terms_right(library)
    with pytest.warns(RuntimeWarning):
        forward, why_not = build.load("forward")  # csr_kernel.c and column_kernel.c call omp_* themselves
    assert forward is not None, why_not


def test_a_failed_build_keeps_the_compilers_whole_error_on_one_line(cache, tmp_path, monkeypatch):
    cc = compiler(tmp_path, "cc-broken", 'case " $* " in *" --version "*) exec cc "$@";; esac\n'
                                         'echo "vd_kernel.c:3:10: fatal error: omp.h: No such file or directory" >&2\n'
                                         'echo "    3 | #include <omp.h>" >&2\necho "compilation terminated." >&2\nexit 1')
    monkeypatch.setenv("CC", str(cc))
    library, why_not = build.load("vd")
    assert library is None and "\n" not in why_not
    assert "fatal error: omp.h: No such file or directory" in why_not and "compilation terminated." in why_not
    assert why_not.index("fatal error") < why_not.index("compilation terminated.")  # the error first
    assert vd.vd_path("cpu") == ("torch", why_not)


@pytest.mark.parametrize("cc, words", [("", "CC is empty"), ("'unclosed", "cannot be split"),
                                       ("no-such-cc-here", "no compiler: no-such-cc-here did not run")])
def test_no_compiler_is_said_in_one_line(cc, words, cache, monkeypatch):
    monkeypatch.setenv("CC", cc)
    library, why_not = build.load("masked")
    assert library is None and words in why_not and "\n" not in why_not


def test_an_unwritable_cache_still_builds_for_the_process(cache, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    library, why_not = build.load("vd")
    assert library is not None, why_not
    assert_vd_terms_right(library)


def test_importing_the_repos_modules_changes_no_process_wide_setting():
    """Beyond what torch and tqdm set as they load: a user's `import inference` leaves their warnings and logs alone."""
    code = ("import logging, warnings, torch, tqdm; before = list(warnings.filters); import inference, eval, train; "
            "assert warnings.filters == before, 'a warnings filter'; "
            "assert logging.getLogger('torch.utils.cpp_extension').level == logging.NOTSET, 'a logger'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_cache_lies_outside_the_clone(cache):
    assert build.load("vd")[0] is not None
    assert REPO not in cache.parents and list(cache.glob("vd-*.so"))
