"""The benchmark's optional dependencies.

matplotlib (the plot), gguf (writing GGUF files) and threadpoolctl are pinned in pyproject's [bench]
extra, which `make bench` installs. llama.cpp, the peer, gets a venv of its own (WORK/venvs/llama)
with every package pinned in bench/llama-requirements.txt, so nothing is installed into the running
environment. llama-cpp-python ships as source and compiles llama.cpp (several minutes on 2 cores), so
the install runs under a time limit in its own process group; on failure or time-out the llama.cpp peer
is skipped with the reason recorded. pip keeps the built wheel in its cache: a new venv takes seconds.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LLAMA_REQUIREMENTS = Path(__file__).with_name("llama-requirements.txt")


def ensure(module: str, package: str, log=print) -> bool:
    """Whether MODULE imports. The benchmark's own dependencies are pinned in pyproject's [bench]
    extra and installed by `make bench`; nothing is installed here."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        log(f"[bench] {package} is missing: pip install -e '.[bench]' (make bench does)")
        return False


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[bool, str]:
    """(succeeded, last lines of output); on time-out the whole process group (pip and the
    compilers it started) is killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"timed out after {timeout:.0f} s"
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return proc.returncode == 0, " | ".join(lines[-3:])


def ensure_llama(venv: Path, timeout: float, log=print) -> dict:
    """{"available", "version", "python", "message", "install_s"}: llama-cpp-python in its own venv,
    made (or brought up to bench/llama-requirements.txt) here."""
    python, stamp = venv / "bin" / "python", venv / ".installed"  # stamp: the requirements installed
    wanted = LLAMA_REQUIREMENTS.read_text(encoding="utf-8")
    ok, message, start = True, "already installed", time.perf_counter()
    if not (stamp.exists() and stamp.read_text(encoding="utf-8") == wanted):
        log(f"[bench] installing {LLAMA_REQUIREMENTS.name} into {venv} (compiles llama.cpp; limit {timeout:.0f} s)")
        env = dict(os.environ)
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        env.setdefault("CMAKE_ARGS", "-DLLAVA_BUILD=OFF")  # the multimodal library is not needed
        ok, message = _run([sys.executable, "-m", "venv", str(venv)], timeout)
        if ok:
            ok, message = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                "--no-deps", "-r", str(LLAMA_REQUIREMENTS)], timeout, env)
        if ok:
            stamp.write_text(wanted, encoding="utf-8")
            message = f"installed in {time.perf_counter() - start:.0f} s"
    seconds = time.perf_counter() - start
    if ok:  # it imports, and says its version
        ok, version = _run([str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"], 120)
        message = message if ok else version
    if not ok:
        return {"available": False, "version": None, "python": None, "install_s": seconds,
                "message": f"llama.cpp SKIPPED: no llama_cpp in {venv} ({message})"}
    log(f"[bench] llama-cpp-python {version} in {venv}: {message}")
    return {"available": True, "version": version, "python": str(python), "message": message, "install_s": seconds}
