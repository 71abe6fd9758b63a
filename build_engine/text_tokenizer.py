"""Train the word-level caption tokenizer (Hugging Face `tokenizers`) shipped as tokenizer.json.

Word-level rather than WordPiece: the caption language is a few hundred words, every one of
which the templates produce, so sub-words would only lengthen sequences. Words a user's prompt
has that no caption had map to [UNK] (engines.text.TextTokenizer.unknown_words reports them).
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4; PAD_ID is 0


def train_tokenizer(sentences: Iterable[str], max_len: int) -> str:
    """The tokenizer's JSON: lower-cased, split on whitespace and punctuation, [CLS] x [SEP],
    padded and truncated to `max_len` ids."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[^a-z0-9\s]"), " "),  # punctuation says nothing here
            normalizers.Replace(Regex(r"\bcolor"), "colour"),  # one spelling in the vocabulary
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(sentences, WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1))
    for i, name in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(name) != i:
            raise AssertionError(f"tokenizer: {name} got id {tok.token_to_id(name)}, expected {i}")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.enable_truncation(max_len)
    tok.enable_padding(length=max_len, pad_id=0, pad_token="[PAD]")
    return tok.to_str()
