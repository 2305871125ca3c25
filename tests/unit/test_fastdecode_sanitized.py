"""The C decoder's tests again, on a build with AddressSanitizer and UndefinedBehaviorSanitizer.

mesh/_fastdecode.c reads bytes that come off Kafka from anyone. The property tests feed it cut,
corrupted and merged envelopes; here they run against a sanitized build of the same source, in
a subprocess that preloads the sanitizer runtimes and sends every Python allocation through
``malloc`` (so a read past the end of a ``bytes`` value lands in a red zone, not in a pymalloc
pool). Any report fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "mesh" / "_fastdecode.c"

# Runs in the subprocess: load the sanitized build as mesh._fastdecode, then the tests.
RUNNER = """
import importlib.util, sys
import mesh
spec = importlib.util.spec_from_file_location("mesh._fastdecode", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["mesh._fastdecode"] = module
spec.loader.exec_module(module)
import pytest
code = pytest.main(["-q", "-s", "-p", "no:cacheprovider", sys.argv[2]])
assert module.__file__ == sys.argv[1], module.__file__
sys.exit(code)
"""


def gcc(*args: str) -> str:
    return subprocess.run(["gcc", *args], check=True, capture_output=True, text=True).stdout


def test_the_decoder_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    library = tmp_path / f"_fastdecode{sysconfig.get_config_var('EXT_SUFFIX')}"
    gcc(
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        "-fno-omit-frame-pointer",
        "-shared",
        "-fPIC",
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-o",
        str(library),
    )
    runtimes = [gcc(f"-print-file-name={name}").strip() for name in ("libasan.so", "libubsan.so")]
    env = {
        **os.environ,
        "LD_PRELOAD": " ".join(runtimes),
        "PYTHONMALLOC": "malloc",
        # CPython itself is not built for LeakSanitizer; leaks are tested by reference counts.
        "ASAN_OPTIONS": "detect_leaks=0",
        "UBSAN_OPTIONS": "print_stacktrace=1",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(library), str(ROOT / "tests/unit/test_fastdecode.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert "Sanitizer" not in output, output[-4000:]
    assert "runtime error" not in output, output[-4000:]
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output, output[-4000:]
