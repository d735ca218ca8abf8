"""teacher.dtype int8 (models/int8.py): close to float32, on the layer and on a crafted batch."""
import numpy as np
import pytest
import torch

from potstill.models.int8 import _INPUTS, KERNELS, RESIDUAL, Int8Linear, _split, default_kernel, quantize_linear
from potstill.models.teacher.hf import HFTeacher, normalise
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.config.core import ConfigError, parse_config
from potstill.models.teacher.backends import open_store
from potstill.store import answer_source

LABELS = ["negative", "positive", "sci.space", "very positive"]  # 1- and multi-token labels
# A crafted batch: short and long rows (padding inside the batch), repeated words, one row
# that is only the prompt's own vocabulary.
TEXTS = ["the movie was good", "a bad film with terrible pacing and awful dialogue",
         "good", "the acting was great but the pacing was bad and the dialogue awful " * 3,
         "bad bad bad", "Possible answers: negative, positive", "great acting", "awful"]
BASE = {"dataset": "d", "task": {"labels": ["a", "b"]}, "corpus": {"unlabeled": {"path": "u.jsonl"}}}


def test_int8_linear_matches_float_linear_within_quantisation_error():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 5, 64)
    x[0, 1] *= 40  # an outlier token: per-token scales keep it from drowning the others
    exact, approx = linear(x), Int8Linear(linear)(x)
    assert approx.shape == exact.shape and approx.dtype == exact.dtype
    rel = (approx - exact).norm(dim=-1) / exact.norm(dim=-1)
    assert rel.max() < 0.02
    assert Int8Linear(linear).weight_t.dtype == torch.int8


def test_quantize_linear_replaces_every_linear_layer():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Sequential(torch.nn.Linear(8, 4, bias=False)))
    quantize_linear(model)
    assert [type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__] == \
        ["Int8Linear", "Int8Linear"]


@pytest.fixture(scope="module")
def sharp_lm(tiny_lm, tmp_path_factory) -> str:
    """The tiny Llama with larger random weights (std 0.3, seed 2): its labels depend on the text, with
    clear margins on most rows, so that quantisation errors would show (at the default init
    every row gets the same label at p ~ 0.99)."""
    import shutil
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    torch.manual_seed(2)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("sharp-lm")
    model.save_pretrained(folder)
    for f in Path(tiny_lm).iterdir():
        if not (folder / f.name).exists():
            shutil.copy(f, folder / f.name)
    return str(folder)


def test_int8_scoring_agrees_with_float32_on_a_crafted_batch(sharp_lm):
    fp32 = HFTeacher(sharp_lm, LABELS, batch_size=3)
    int8 = HFTeacher(sharp_lm, LABELS, batch_size=3, dtype="int8")
    assert any(isinstance(m, Int8Linear) for m in int8.model.modules())
    assert not any(isinstance(m, Int8Linear) for m in fp32.model.modules())  # not shared
    assert isinstance(int8.model.lm_head, torch.nn.Linear)  # the head stays float32
    p32, p8 = normalise(fp32.score_labels(TEXTS)), normalise(int8.score_labels(TEXTS))
    assert len(set(p32.argmax(1))) > 1  # the batch is not one label everywhere
    assert np.abs(p32 - p8).max() < 0.1
    top2 = np.sort(p32, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.1  # only a near-tie may flip
    assert clear.sum() >= len(TEXTS) // 2
    assert (p32.argmax(1) == p8.argmax(1))[clear].all()
    assert not np.array_equal(p32, p8)  # int8 really ran


def test_int8_is_refused_with_vllm_and_with_saliency_naming_the_setting():
    assert parse_config({**BASE, "teacher": {"dtype": "int8"}}).teacher.dtype == "int8"
    with pytest.raises(ConfigError, match=r"teacher\.dtype=int8 is for teacher\.backend=hf"):
        parse_config({**BASE, "teacher": {"dtype": "int8", "backend": "vllm"}})
    with pytest.raises(ConfigError, match=r"teacher\.dtype=int8 cannot run saliency\.enabled"):
        parse_config({**BASE, "teacher": {"dtype": "int8"}, "saliency": {"enabled": True}})


def test_int8_answers_are_stored_under_other_keys_than_float32(tiny_lm):
    sha = "ab" * 32
    keys = {}
    for dtype in ("float32", "int8", "bfloat16"):
        cfg = parse_config({**BASE, "teacher": {"dtype": dtype}})
        setup = TeacherSetup.from_config(cfg, tiny_lm, store=open_store("out", cfg.teacher, sha))
        keys[dtype] = setup.store.source
    assert keys["float32"] == sha  # float32 keys are what they always were
    assert len(set(keys.values())) == 3
    vllm = parse_config({**BASE, "teacher": {"backend": "vllm", "vllm": {"dtype": "bfloat16"}}})
    assert open_store("out", vllm.teacher, sha).source == keys["bfloat16"]
    assert answer_source("", "int8") == ""  # no weights digest (the TA): nothing is stored


def test_the_two_int8_terms_keep_each_value_to_half_a_step_of_the_residual():
    """values ~ scale (first + second / R): the error is at most scale / (2 R) per value, about
    15 bits of each row's range, and an outlier (x40) only widens its own row's scale."""
    torch.manual_seed(0)
    values = torch.randn(6, 300)
    values[2, 7] *= 40
    scale, first, second = _split(values)
    assert first.dtype == second.dtype == torch.int8
    back = scale * (first.float() + second.float() / RESIDUAL)
    assert ((back - values).abs() <= scale / (2 * RESIDUAL) + 1e-6).all()


def test_int8_linear_is_within_a_thousandth_of_float32():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 5, 64)
    x[0, 1] *= 40
    exact, approx = linear(x), Int8Linear(linear)(x)
    assert ((approx - exact).norm(dim=-1) / exact.norm(dim=-1)).max() < 1e-3


def test_int8_gives_float32_s_label_on_every_row_of_the_crafted_batch(sharp_lm):
    """Within 1e-2 of float32's probabilities on every row (measured: 1.2e-3), so every label
    agrees; the one-term scheme before needed a 0.1 margin to promise a row's label."""
    fp32 = HFTeacher(sharp_lm, LABELS, batch_size=3)
    int8 = HFTeacher(sharp_lm, LABELS, batch_size=3, dtype="int8")
    p32, p8 = normalise(fp32.score_labels(TEXTS)), normalise(int8.score_labels(TEXTS))
    assert (p32.argmax(1) == p8.argmax(1)).all()
    assert np.abs(p32 - p8).max() < 1e-2


@pytest.mark.parametrize("kernel", KERNELS)
def test_each_int8_kernel_gives_the_same_products(kernel):
    """oneDNN's int8 matmul (where torch has it) and torch._int_mm run the same integer
    products: their outputs differ by float rounding only."""
    if kernel == "onednn" and default_kernel() != "onednn":
        pytest.skip("this torch build has no working onednn::qlinear_pointwise")
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(3, 7, 96)
    x[1, 2] *= 30
    with torch.inference_mode():
        got = Int8Linear(linear, kernel)(x)
        _INPUTS.last = None
        scale, first, second = _split(x.reshape(-1, 96))
        w_scale, p1, p2 = _split(linear.weight.detach())
        q1, q2, p1, p2 = (t.double() for t in (first, second, p1, p2))
        exact = (q1 @ p1.T + (q1 @ p2.T + q2 @ p1.T) / RESIDUAL) * scale.double() * w_scale.double().T
        exact = (exact + linear.bias.double()).reshape(3, 7, 40)
    assert got.shape == (3, 7, 40) and got.dtype == torch.float32
    assert ((got.double() - exact).abs().max() / exact.abs().max()) < 1e-5


def test_layers_fed_one_tensor_quantise_it_once_and_a_changed_tensor_again():
    torch.manual_seed(0)
    q, k = torch.nn.Linear(32, 16, bias=False), torch.nn.Linear(32, 8, bias=False)
    q8, k8 = Int8Linear(q), Int8Linear(k)
    x = torch.randn(4, 32)
    with torch.no_grad():
        first = q8(x)
        assert _INPUTS.last[0] is x
        terms = _INPUTS.last[2]
        assert torch.allclose(k8(x), k(x), rtol=0, atol=1e-3 * k(x).abs().max())
        assert _INPUTS.last[2] is terms  # k reused q's terms of the same tensor
        x.mul_(3)  # written in place: its version moves, so its terms are made again
        assert torch.allclose(q8(x), 3 * first, rtol=1e-4, atol=1e-5)
        assert _INPUTS.last[2] is not terms


def test_an_unknown_int8_kernel_is_refused_by_name():
    with pytest.raises(ValueError, match=r"int8 kernel 'avx'.*onednn, int_mm"):
        Int8Linear(torch.nn.Linear(4, 4), "avx")
