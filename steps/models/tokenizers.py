"""Tokenizers for the tiny profiles, trained locally with the `tokenizers` library.

No hub exists at run time (docs/DESIGN.md §10), so the `smoke`/`tiny` models cannot reuse the CLIP, T5 or
Qwen vocabularies. Each function here trains a small tokenizer of the SAME family as the production one
on a corpus covering the synthetic world's vocabulary and wraps it in the transformers class the
production pipeline uses, so every downstream code path (FluxFillPipeline.encode_prompt, the Qwen
processor, chat templates) runs unchanged:

- CLIP: byte-level BPE with the ``</w>`` end-of-word suffix (`CLIPTokenizer`);
- T5: Unigram with specials ``<pad>``, ``</s>``, ``<unk>`` at ids 0, 1, 2 (`T5Tokenizer`);
- Qwen judge: byte-level BPE with Qwen's chat/vision special tokens, "Yes" and "No" single tokens
  (`Qwen2Tokenizer`).

Training is deterministic for a fixed corpus, so two builds (two processes) give identical token ids:
BPE merges are learnt here (`learn_bpe`, ties broken lexicographically) on pre-tokens produced by the
transformers class's own `tokenizers` normaliser/pre-tokeniser, because the `tokenizers` BpeTrainer
breaks ties in a per-process hash order; the Unigram trainer's output is canonicalised and completed
with whole-word pieces (it under-trains on a corpus this small).
"""

from __future__ import annotations

import string
from collections import Counter

COLOURS = tuple(
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta teal navy olive "
    "maroon lime gold silver beige".split()
)
SHAPES = tuple(
    "circle square triangle rectangle star ellipse diamond hexagon cross ring heart disk oval box blob "
    "shape object objects".split()
)
TEXT_WORDS = tuple(
    "a an the word words text in on at of with and or remove fill extend removal background gradient "
    "texture textured striped dotted plain left right top bottom center middle small large big written "
    "saying reads letters".split()
) + ("high-definition, perfect composition",)
JUDGE_WORDS = tuple(
    "Yes No yes no Is is first second third image images better worse than task dimension consistency "
    "structure aesthetics prompt masked source mask region Answer answer only system user assistant "
    "Question Compare for which candidate reference requested content Does match show shows".split()
) + (
    "the first image better than the second image",
    "text alignment",
    "text_alignment",
    "removal quality",
    "removal_quality",
    "You are a helpful assistant.",
)
UPPER_WORDS = tuple(
    "CAT DOG SUN SKY RED BIG TOP MAP BOX CAR HAT KEY OAK JOY FISH BIRD TREE STAR MOON RAIN SNOW WIND FIRE "
    "GOLD BLUE CAKE LAMP SHIP ROSE WAVE OPEN STOP EXIT SALE PARK CITY HOME LOVE".split()
)

# Qwen2.5-VL's special tokens, in the order of their ids in the released tokenizer.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def world_corpus(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Sentences covering the synthetic world's prompts: colours, shapes, quoted upper-case words,
    letters, digits and punctuation, plus any ``extra`` lines (e.g. the judge's query template)."""
    lines: list[str] = []
    for c in COLOURS:
        for s in SHAPES:
            lines.append(f"a {c} {s}")
            lines.append(f"the {c} {s} in the center")
    for w in UPPER_WORDS:
        lines.append(f'the word "{w}" in {COLOURS[len(w) % len(COLOURS)]}')
        lines.append(f"text '{w}'")
    lines += list(TEXT_WORDS) + list(JUDGE_WORDS)
    lines.append(" ".join(string.ascii_uppercase))
    lines.append(" ".join(string.ascii_lowercase))
    lines.append(" ".join(string.digits))
    lines.append(" ".join(string.punctuation))
    lines += list(extra)
    return lines


def train_clip_tokenizer(corpus: list[str] | None = None, vocab_size: int = 800, model_max_length: int = 77):
    """A `CLIPTokenizer` (byte-level BPE, ``</w>`` suffix, lower-casing) trained on ``corpus``.

    Pre-tokens come from the normaliser / pre-tokeniser `CLIPTokenizer` itself installs, so training
    sees exactly the pieces encoding later produces. ``<|startoftext|>`` / ``<|endoftext|>`` are the
    bos/eos/pad tokens; set the CLIP text config's ``eos_token_id`` to ``tok.eos_token_id``.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    base = alphabet + [ch + "</w>" for ch in alphabet]  # CLIP needs "x</w>" for every word-final byte
    words = _pre_tokenize(CLIPTokenizer(), corpus or world_corpus())
    merges = learn_bpe(words, vocab_size - len(specials) - len(base), end_of_word="</w>")
    vocab = _bpe_vocab(specials, base, merges)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def train_t5_tokenizer(corpus: list[str] | None = None, vocab_size: int = 300, model_max_length: int = 512):
    """A `T5Tokenizer` (Unigram, specials ``<pad>``=0, ``</s>``=1, ``<unk>``=2, no sentinels).

    ``model_max_length`` becomes the default T5 sequence length in `steps.models.denoise` (the real
    FLUX tokenizer_2 has 512; the tiny profiles use a few dozen to keep the transformer small).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    uni = Tokenizer(models.Unigram())
    uni.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=list(string.printable.strip()) + ["▁"],
        show_progress=False,
    )
    corpus = list(corpus or world_corpus())
    uni.train_from_iterator(corpus, trainer=trainer)
    import json

    trained = [tuple(p) for p in json.loads(uni.to_str())["model"]["vocab"]]
    assert [v[0] for v in trained[:3]] == ["<pad>", "</s>", "<unk>"], trained[:3]
    pieces = _with_whole_words(trained[3:], corpus)
    vocab = trained[:3] + _canonical_unigram(pieces)
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def train_qwen_tokenizer(
    corpus: list[str] | None = None, vocab_size: int = 768, model_max_length: int = 4096
):
    """A `Qwen2Tokenizer` (byte-level BPE with Qwen's pre-tokeniser and special tokens).

    "Yes" and "No" (and " Yes"/" No") are forced into the vocabulary as whole pieces so the judge's
    answer is one token, as in the released Qwen2.5 tokenizer. Padding is ``<|endoftext|>`` on the
    LEFT, so ``logits[:, -1]`` is always the answer position in a batch.
    """
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    corpus = list(corpus or world_corpus())
    corpus += ["Yes No"] * 50 + ["Yes", "No"] * 50  # frequent enough to become whole pieces
    base = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = learn_bpe(_pre_tokenize(Qwen2Tokenizer(), corpus), vocab_size - len(base))
    vocab = _bpe_vocab([], base, merges)
    # Special tokens get the ids right after the BPE vocabulary, as in Qwen (151643...).
    for tok in QWEN_SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        padding_side="left",
        errors="replace",
    )
    from tokenizers import AddedToken

    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS[1:]
            ]
        }
    )
    for word in ("Yes", "No"):
        ids = tok.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"judge tokenizer: {word!r} is not a single token ({ids})")
    return tok


def _with_whole_words(pieces: list[tuple[str, float]], corpus: list[str]) -> list[tuple[str, float]]:
    """Add every alphabetic corpus word as one piece, scored by its log relative frequency.

    On a corpus this small the `tokenizers` Unigram trainer keeps mostly characters and bigrams
    ("red" -> "▁re" "d", "circle" -> 5 pieces), which wastes the few text positions the tiny transformer
    sees. Whole-word pieces ("▁red"; bare "FISH" after a quote) are the maximum-likelihood unigram
    pieces for these words; the trainer's pieces stay as the fallback for anything else.
    """
    import math
    import re

    counts: Counter[str] = Counter()
    for line in corpus:
        for word in re.findall(r"[A-Za-z][A-Za-z-]*", line):
            counts["▁" + word] += 1
            if word.isupper():
                counts[word] += 1  # quoted text: '"FISH"' pre-tokenises to '▁"FISH"'
    total = sum(counts.values())
    scores = dict(pieces)
    for word, count in sorted(counts.items()):
        scores[word] = max(scores.get(word, -math.inf), math.log(count / total))
    return list(scores.items())


def _canonical_unigram(pieces: list[tuple[str, float]], tie: float = 5e-3) -> list[tuple[str, float]]:
    """Pieces and scores independent of the trainer's run-to-run jitter.

    Between runs the Unigram trainer's scores differ in the last digits, and pieces it scores as near
    ties (e.g. single characters: -10.9460, -10.9461, ... handed out in hash-map order) swap scores.
    Near-tie runs become one group sharing its (run-independent) best score, ordered by piece, so
    token ids and segmentations are identical for a given corpus.
    """
    groups: list[list[tuple[str, float]]] = []
    for piece, score in sorted(pieces, key=lambda x: -x[1]):
        if groups and groups[-1][-1][1] - score < tie:
            groups[-1].append((piece, score))
        else:
            groups.append([(piece, score)])
    return [(p, round(g[0][1], 6)) for g in groups for p in sorted(x[0] for x in g)]


def _pre_tokenize(template, corpus: list[str]) -> Counter[str]:
    """Pre-token counts under ``template``'s own normaliser and pre-tokeniser (byte-level strings)."""
    backend = template.backend_tokenizer
    counts: Counter[str] = Counter()
    for line in corpus:
        text = backend.normalizer.normalize_str(line) if backend.normalizer is not None else line
        counts.update(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return counts


def learn_bpe(
    words: Counter[str], num_merges: int, end_of_word: str = "", min_frequency: int = 2
) -> list[tuple[str, str]]:
    """Byte-pair merges learnt from pre-token counts, deterministically.

    The `tokenizers` BpeTrainer breaks count ties by symbol ids that follow a per-process hash order, so
    two builds of the "same" tokenizer differ. The corpus here is a few hundred distinct words, so the
    textbook algorithm in Python is fast (well under a second) and breaks ties lexicographically.
    """
    corpus: dict[tuple[str, ...], int] = Counter()
    for word, count in words.items():
        symbols = list(word)
        symbols[-1] += end_of_word
        corpus[tuple(symbols)] += count
    pairs: Counter[tuple[str, str]] = Counter()
    for symbols, count in corpus.items():
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += count
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges and pairs:
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        for symbols in [w for w in corpus if best[0] in w and best in zip(w, w[1:])]:
            count = corpus.pop(symbols)
            merged = _merge(symbols, best)
            pairs.subtract(_weighted_pairs(symbols, count))
            pairs.update(_weighted_pairs(merged, count))
            corpus[merged] = corpus.get(merged, 0) + count
        pairs = +pairs  # drop pairs whose count fell to zero
    return merges


def _weighted_pairs(symbols: tuple[str, ...], count: int) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for pair in zip(symbols, symbols[1:]):
        out[pair] += count
    return out


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def _bpe_vocab(specials: list[str], base: list[str], merges: list[tuple[str, str]]) -> dict[str, int]:
    """Ids: specials, then the base symbols, then each merge's product in merge order."""
    order = list(dict.fromkeys(specials + base + [a + b for a, b in merges]))
    return {tok: i for i, tok in enumerate(order)}
