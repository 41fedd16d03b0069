"""A manifest beside every results file: what produced it, so a number can be traced and rerun.

``write_manifests([results_path], inputs={...})`` writes ``<results_path>.manifest.json`` atomically (through
``atomic_io``): the exact command, git commit (and whether the tree had uncommitted changes), Python and
package versions, CPU and GPU, and a SHA-256 of every input file named (data HDF5 files, checkpoints, LM files);
:func:`lm_folder_fingerprint` identifies the LM server's folder (the evaluator records it with the server's arguments).
Hashes are streamed in 1 MiB blocks, never loading a file whole.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from nejm_b2txt_utils.atomic_io import atomic_write_json

#: Distributions whose versions change results.
PACKAGES = ("torch", "numpy", "scipy", "h5py", "omegaconf", "kaldialign", "kaldi-decoder", "kaldilm",
            "transformers", "tensorflow-cpu", "torch_xla", "nejm-b2txt")
REPO = Path(__file__).resolve().parents[1]


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed ``block`` bytes at a time.

    Raises:
        FileNotFoundError: no such file.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def git_state(repo: Path = REPO) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout this code runs from."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def hardware() -> dict:
    """CPU model and count; the CUDA device names when torch is already imported and sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus: list[str] = []
    torch = sys.modules.get("torch")  # never import torch just to describe the machine
    if torch is not None and torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpus": gpus, "platform": platform.platform()}


def build_manifest(inputs: Mapping[str, str | os.PathLike] | None = None, command: list[str] | None = None,
                   extra: Mapping | None = None) -> dict:
    """The manifest dict.

    Args:
        inputs: ``{name: file}`` to hash (a missing file is recorded as ``None``).
        command: the command line (default: ``sys.argv`` with the interpreter).
        extra: anything else to record (settings, seeds).

    Returns:
        ``{"created", "command", "cwd", "git", "python", "packages", "hardware", "inputs", **extra}``.
    """
    hashed = {}
    for name, path in (inputs or {}).items():
        p = Path(path)
        hashed[name] = {"path": str(p.resolve()), "sha256": sha256_file(p) if p.is_file() else None,
                        "bytes": p.stat().st_size if p.is_file() else None}
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": list(command) if command is not None else [sys.executable, *sys.argv],
            "cwd": os.getcwd(), "git": git_state(), "python": sys.version.split()[0],
            "packages": package_versions(), "hardware": hardware(), "inputs": hashed, **(extra or {})}


#: LM-folder files larger than this are recorded by size and modification time only (a released 5-gram's
#: ``G_no_prune.fst`` or ARPA is tens of GB: hashing it on every evaluation would take minutes).
LM_HASH_MAX_BYTES = 256 << 20


def lm_folder_fingerprint(lm_path: str | os.PathLike, max_hash_bytes: int = LM_HASH_MAX_BYTES) -> dict | None:
    """What identifies an LM folder: every file of it (and of its ``ngram_store/``) by size, and by SHA-256 when
    at most ``max_hash_bytes`` (larger ones by size and mtime).

    Args:
        lm_path: the LM server's ``--lm_path`` (as it publishes it on ``remote_lm_args``).
        max_hash_bytes: the largest file hashed.

    Returns:
        ``{"path", "files": {relative name: {"bytes", "sha256" | "mtime"}}}``, or None when the folder is not
        reachable from here (the server runs on another machine).
    """
    root = Path(lm_path)
    if not root.is_dir():
        return None
    files = {}
    for f in sorted([*root.iterdir(), *((root / "ngram_store").iterdir() if (root / "ngram_store").is_dir() else [])]):
        if not f.is_file():
            continue
        st = f.stat()
        entry: dict = {"bytes": st.st_size}
        if st.st_size <= max_hash_bytes:
            entry["sha256"] = sha256_file(f)
        else:
            entry["mtime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))
        files[str(f.relative_to(root))] = entry
    return {"path": str(root.resolve()), "files": files}


def manifest_path(results_path: str | os.PathLike) -> Path:
    """``<results_path>.manifest.json``."""
    p = Path(results_path)
    return p.with_name(p.name + ".manifest.json")


def write_manifests(results_paths: Iterable[str | os.PathLike], inputs: Mapping[str, str | os.PathLike] | None = None,
                    command: list[str] | None = None, extra: Mapping | None = None) -> list[Path]:
    """Write one :func:`build_manifest` (inputs hashed once) beside each results file, atomically.

    Returns:
        The manifests' paths, parallel to ``results_paths``.
    """
    manifest = build_manifest(inputs, command, extra)
    return [atomic_write_json(manifest_path(p), {**manifest, "results": Path(p).name}) for p in results_paths]
