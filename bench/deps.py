"""The benchmark's optional dependencies.

matplotlib (the plot), gguf (writing GGUF files) and threadpoolctl are pinned in pyproject's
[bench] extra, which `make bench` installs. llama-cpp-python (the llama.cpp peer) ships as source
and compiles llama.cpp (several minutes on 2 cores), so it is installed here, at the pinned
LLAMA_CPP_VERSION, under a time limit in its own process group; on failure or time-out the
llama.cpp peer is skipped with the reason recorded. pip keeps the built wheel in its cache, so
later runs install it in seconds.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

LLAMA_CPP_VERSION = "0.3.36"  # the peer's version is part of the result: pinned


def pip(args: list[str], timeout: float | None, env: dict | None = None) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # pip and the compiler processes it started
        proc.communicate()
        return False, f"timed out after {timeout:.0f} s"
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return proc.returncode == 0, " | ".join(lines[-3:])


def ensure(module: str, package: str, log=print) -> bool:
    """Whether MODULE imports. The benchmark's own dependencies are pinned in pyproject's [bench]
    extra and installed by `make bench`; nothing is installed here."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        log(f"[bench] {package} is missing: pip install -e '.[bench]' (make bench does)")
        return False


def ensure_llama(timeout: float, log=print) -> dict:
    """{"available": bool, "version", "message", "install_s"} for llama-cpp-python."""
    try:
        import llama_cpp

        return {"available": True, "version": llama_cpp.__version__, "message": "already installed",
                "install_s": 0.0}
    except ImportError:
        pass
    log(f"[bench] installing llama-cpp-python (compiles llama.cpp; limit {timeout:.0f} s) ...")
    env = dict(os.environ)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    env.setdefault("CMAKE_ARGS", "-DLLAVA_BUILD=OFF")  # the multimodal library is not needed
    start = time.perf_counter()
    ok, message = pip([f"llama-cpp-python=={LLAMA_CPP_VERSION}"], timeout=timeout, env=env)
    seconds = time.perf_counter() - start
    if ok:
        importlib.invalidate_caches()
        try:
            import llama_cpp

            log(f"[bench] llama-cpp-python {llama_cpp.__version__} installed ({seconds:.0f} s)")
            return {"available": True, "version": llama_cpp.__version__,
                    "message": f"installed in {seconds:.0f} s", "install_s": seconds}
        except Exception as exc:  # built but broken
            message = f"installed but import fails: {exc}"
    reason = f"llama.cpp SKIPPED: `pip install llama-cpp-python` failed ({message})"
    log(f"[bench] {reason}")
    return {"available": False, "version": None, "message": reason, "install_s": seconds}
