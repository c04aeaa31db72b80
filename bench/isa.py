"""The benchmark on AVX2 code paths, on a machine that also has AVX-512.

The performance targets were set on an AVX2-only CPU, where u8 x s8 GEMMs run at about twice the
fp32 rate; on AVX512-VNNI they run at four times, so the same fp32 work weighs twice as much
against the int8 bound. `bench/run.py --isa avx2` measures every system with the kernels it
would pick on an AVX2 CPU, on this machine:

- onnxruntime (MLAS) and the cpuinfo library it embeds enable AVX-512 only when XCR0, read with
  `xgetbv`, says the OS saves the AVX-512 registers. A copy of the onnxruntime package whose
  `xgetbv` instructions report x87/SSE/AVX state only (`mov al, 7`) takes its AVX2 + FMA
  kernels. The copy lives under the work folder; the venv's package is not touched.
- torch: ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS cap it at AVX2.
- numpy's OpenBLAS: OPENBLAS_CORETYPE=Haswell.
- llama.cpp is compiled for the build machine: a second llama-cpp-python, built with
  GGML_NATIVE=OFF, AVX2/FMA/F16C on and AVX-512 off, installed under the work folder.

The host's caches, memory and clock stay what they are: this reproduces an AVX2 CPU's
instruction mix, not a particular AVX2 CPU.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

MARKER = "EDGE_BENCH_ISA"  # set in the re-executed benchmark process
FOLDER = "isa-avx2"  # under the work folder: the patched onnxruntime and the AVX2 llama.cpp
XGETBV = b"\x0f\x01\xd0"
XCR0_AVX_ONLY = b"\xb0\x07\x90"  # mov al, 7; nop: x87 | SSE | AVX state, no opmask/ZMM state
CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell"}
LLAMA_CMAKE = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
               "-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF "
               "-DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DLLAVA_BUILD=OFF")


def add_option(parser) -> None:
    """The --isa option of the scripts that can run on AVX2 code paths."""
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: run on AVX2 kernels, with AVX-512 hidden from onnxruntime, torch and "
                        "llama.cpp (bench/isa.py; the targets were stated for AVX2-only CPUs)")


def xgetbv_offsets(library: Path) -> list[int]:
    """File offsets of the `xgetbv` instructions in a shared library (objdump's addresses of
    .text, which in these libraries equal file offsets; each is checked against the bytes)."""
    if shutil.which("objdump") is None:
        raise RuntimeError("--isa avx2 needs objdump (binutils) to find xgetbv in onnxruntime")
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)],
                             capture_output=True, text=True, check=True).stdout
    return [int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+xgetbv\s*$", listing, re.M)]


def hide_avx512(library: Path) -> int:
    """Patch LIBRARY in place so its `xgetbv` reports no AVX-512 state; the number patched."""
    data = bytearray(library.read_bytes())
    offsets = xgetbv_offsets(library)
    for at in offsets:
        if data[at:at + 3] != XGETBV:
            raise RuntimeError(f"{library.name}: no xgetbv at {at:#x} (objdump address is not a file "
                               "offset here); cannot build the AVX2 onnxruntime")
        data[at:at + 3] = XCR0_AVX_ONLY
    library.write_bytes(bytes(data))
    return len(offsets)


def avx2_onnxruntime(dest: Path) -> Path:
    """A copy of the installed onnxruntime package under DEST whose CPU detection sees no
    AVX-512; returns the folder to put first on PYTHONPATH."""
    import onnxruntime

    source = Path(onnxruntime.__file__).resolve().parent
    stamp = dest / f"onnxruntime-{onnxruntime.__version__}.patched"
    if stamp.exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest / "onnxruntime", ignore=shutil.ignore_patterns("__pycache__"))
    libraries = [p for p in (dest / "onnxruntime" / "capi").iterdir() if ".so" in p.name]
    patched = {p.name: hide_avx512(p) for p in libraries}
    if not any(patched.values()):
        raise RuntimeError("found no xgetbv in onnxruntime's libraries: cannot hide AVX-512 from it")
    stamp.write_text(repr(patched) + "\n")
    return dest


def avx2_llama(dest: Path, timeout: float, log=print) -> dict:
    """llama-cpp-python compiled for AVX2 into DEST (pip --target, no shared wheel cache, so the
    native build in the venv and this one never replace each other)."""
    import deps

    if (dest / "llama_cpp" / "__init__.py").exists():
        return {"available": True, "message": "AVX2 build cached", "install_s": 0.0}
    for module, package in (("diskcache", "diskcache"), ("jinja2", "jinja2"), ("typing_extensions",
                                                                             "typing-extensions")):
        deps.ensure(module, package, log=log)  # llama-cpp-python's own dependencies, in the venv
    log(f"[bench] building llama-cpp-python for AVX2 into {dest} (limit {timeout:.0f} s) ...")
    env = {**os.environ, "CMAKE_ARGS": LLAMA_CMAKE,
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    ok, message = deps.pip(["--no-deps", "--no-cache-dir", "--target", str(dest), "llama-cpp-python"],
                           timeout=timeout, env=env)
    if not ok:
        shutil.rmtree(dest, ignore_errors=True)
        return {"available": False, "message": f"llama.cpp SKIPPED: the AVX2 build failed ({message})"}
    return {"available": True, "message": "built for AVX2"}


def reexec_avx2(work: Path, llama: bool, llama_timeout: float, log=print) -> None:
    """Build the AVX2 onnxruntime (and llama.cpp), then replace this process with the same
    command in the AVX2 environment. Returns only when already in it."""
    if os.environ.get(MARKER) == "avx2":
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        sys.exit(f"--isa avx2 applies to x86-64 CPUs; this one is {platform.machine()}")
    root = (work / FOLDER).resolve()
    paths = [str(avx2_onnxruntime(root / "ort"))]
    if llama:
        built = avx2_llama(root / "llama", llama_timeout, log=log)
        if built["available"]:
            paths.append(str(root / "llama"))
        else:
            log(f"[bench] {built['message']}")
    env = {**os.environ, **CAPS, MARKER: "avx2",
           "PYTHONPATH": os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    log("[bench] re-running on AVX2 code paths (AVX-512 hidden from onnxruntime, torch, OpenBLAS)")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _from_avx2_folder(module) -> bool:
    return FOLDER in Path(module.__file__).parts


def describe() -> dict:
    """What the running process uses, checked from the libraries themselves."""
    if os.environ.get(MARKER) != "avx2":
        return {"paths": "native"}
    import onnxruntime

    info = {"paths": "avx2", "onnxruntime": onnxruntime.__file__,
            "env": {k: os.environ.get(k) for k in CAPS}}
    if not _from_avx2_folder(onnxruntime):
        raise RuntimeError(f"--isa avx2: imported the unpatched onnxruntime ({onnxruntime.__file__})")
    try:
        import torch

        info["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        pass
    try:
        import llama_cpp

        flags = llama_cpp.llama_print_system_info().decode()
        info["llama_cpp"] = llama_cpp.__file__
        info["llama_system_info"] = flags
    except ImportError:
        pass
    return info


def llama_status() -> dict:
    """ensure_llama's answer in the AVX2 process: only the AVX2 build counts."""
    try:
        import llama_cpp
    except ImportError:
        return {"available": False, "version": None,
                "message": "llama.cpp SKIPPED: no AVX2 build of llama-cpp-python (see the log above)"}
    flags = llama_cpp.llama_print_system_info().decode()
    if not _from_avx2_folder(llama_cpp) or "AVX512 = 1" in flags:
        return {"available": False, "version": None,
                "message": f"llama.cpp SKIPPED: imported a build that is not the AVX2 one ({llama_cpp.__file__})"}
    return {"available": True, "version": llama_cpp.__version__, "install_s": 0.0,
            "message": f"built for AVX2 ({flags.strip()})"}
