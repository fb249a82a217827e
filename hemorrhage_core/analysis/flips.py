"""Flips on a built-in cloze set: accuracy can stay flat while answers change (Dutta et al., 2024).

The set is made from a corpus, deterministically: sentences from the second half of the text (the evaluation
windows come from its start), each with its last content word held out. The item is the text before that word
(up to `context_words` words, from the sentence's paragraph), the answer is the word, and the distractors are
other content words of the same corpus with a similar frequency (the nearest ranks in the corpus' word-frequency
list, so that frequency alone does not give the answer away) and a similar length.

Each candidate is scored by the log-likelihood the model gives its tokens (" word") after the context, summed;
the model's choice is the highest score. For both models: accuracy, and the flips between them: items whose
correctness changes in either direction (right -> wrong, wrong -> right) and items whose choice changes at all.
Decoding changes are applied to the logits (as the profile does), so a temperature can flip multi-token answers.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from ..corpora import Corpus, sequence_bos
from ..probes.capture import forward_sites, unembed
from ..probes.reference import context_rows
from ..progress import scaled

STOPWORDS = frozenset(
    [
        "about",
        "above",
        "after",
        "again",
        "against",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "could",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "from",
        "further",
        "have",
        "having",
        "here",
        "hers",
        "herself",
        "himself",
        "into",
        "itself",
        "just",
        "more",
        "most",
        "myself",
        "once",
        "only",
        "other",
        "ours",
        "ourselves",
        "over",
        "same",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "under",
        "until",
        "very",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "whom",
        "will",
        "with",
        "would",
        "your",
        "yours",
        "yourself",
        "also",
        "said",
        "says",
        "according",
    ]
)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class ClozeItem:
    context: str  # text before the held-out word (no trailing space)
    choices: tuple[str, ...]  # candidate words, shuffled
    answer: int  # index of the held-out word in `choices`


@dataclass(frozen=True)
class ClozeSet:
    corpus: str
    corpus_sha256: str
    items: tuple[ClozeItem, ...]
    params: dict

    @property
    def set_id(self) -> str:
        payload = json.dumps([self.corpus_sha256, self.params], sort_keys=True)
        return "cloze-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


def _content(word: str) -> bool:
    return len(word) >= 4 and word.isalpha() and word.islower() and word not in STOPWORDS


def build_cloze(
    corpus: Corpus, *, n_items: int = 64, n_choices: int = 4, context_words: int = 40, seed: int = 0
) -> ClozeSet:
    """A deterministic cloze set from `corpus` (see the module docstring). ValueError if the corpus is too small."""
    if n_items < 1 or n_choices < 2:
        raise ValueError("a cloze set needs >= 1 item and >= 2 choices")
    text = corpus.text
    counts = Counter(w for w in _WORD.findall(text) if _content(w))
    ranked = [w for w, _ in counts.most_common()]
    rank = {w: i for i, w in enumerate(ranked)}
    half = len(text) // 2
    candidates = []
    for m in _SENTENCE.finditer(text, half):
        words = list(_WORD.finditer(m.group(0)))
        target = next((w for w in reversed(words) if _content(w.group(0)) and counts[w.group(0)] >= 2), None)
        if target is None:
            continue
        cut = m.start() + target.start()
        para_start = text.rfind("\n", 0, cut) + 1
        before = text[para_start:cut].split()
        if len(before) < 5:  # too little context to predict anything
            continue
        candidates.append((" ".join(before[-context_words:]), target.group(0)))
    rng = random.Random(seed)
    if len(candidates) < n_items:
        raise ValueError(
            f"corpus {corpus.name!r} yields only {len(candidates)} cloze items, {n_items} asked for"
        )
    picked = sorted(rng.sample(range(len(candidates)), n_items))
    items = []
    for i in picked:
        context, answer = candidates[i]
        r = rank[answer]
        # Nearest ranks first (similar frequency), similar length; never the answer itself.
        pool = sorted(
            (w for w in ranked[max(0, r - 60) : r + 60] if w != answer and abs(len(w) - len(answer)) <= 3),
            key=lambda w: (abs(rank[w] - r), w),
        )[: 4 * n_choices]
        if len(pool) < n_choices - 1:
            pool = [w for w in ranked if w != answer][: n_choices - 1]
        distractors = rng.sample(pool, n_choices - 1)
        choices = [answer, *distractors]
        rng.shuffle(choices)
        items.append(ClozeItem(context=context, choices=tuple(choices), answer=choices.index(answer)))
    params = {"n_items": n_items, "n_choices": n_choices, "context_words": context_words, "seed": seed}
    return ClozeSet(corpus=corpus.name, corpus_sha256=corpus.sha256, items=tuple(items), params=params)


def _sequences(tokenizer, items: tuple[ClozeItem, ...]) -> list[tuple[list[int], int]]:
    """(ids of context + candidate, index of the first candidate token) for every item x choice, in order."""
    bos = sequence_bos(tokenizer)
    out = []
    for item in items:
        ctx = tokenizer(item.context, add_special_tokens=False)["input_ids"]
        if bos is not None:
            ctx = [bos, *ctx]
        for choice in item.choices:
            cand = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            out.append((ctx + cand, len(ctx)))
    return out


def score_cloze(
    model, tokenizer, cloze: ClozeSet, *, transform=None, needs_context: bool = False, batch_size: int = 16
):
    """Summed log-likelihood of each candidate after its context: FloatTensor [n_items, n_choices].

    `transform(logits[, context=])` is a ModifiedModel's logit transform (decoding changes); `needs_context` says
    whether it reads the preceding tokens.
    """
    seqs = _sequences(tokenizer, cloze.items)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        # Right padding: a causal model's positions before the padding never see it.
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        for b, (s, _) in enumerate(chunk):
            ids[b, : len(s)] = torch.tensor(s)
        final, _ = forward_sites(model, ids.to(device))  # [B, W, d]
        for b, (s, first) in enumerate(chunk):
            pos = torch.arange(first - 1, len(s) - 1)  # positions predicting the candidate's tokens
            logits = unembed(model, final[b, pos])  # [n_cand_tokens, V]
            if transform is not None:
                if needs_context:
                    rows = slice(int(pos[0]), int(pos[-1]) + 1)
                    window = ids[b : b + 1, : len(s)].to(device)
                    logits = transform(logits, context=context_rows(window, rows))
                else:
                    logits = transform(logits)
            lp = torch.log_softmax(logits.float(), dim=-1)
            target = torch.tensor(s[first:], device=lp.device)
            scores.append(float(lp.gather(1, target[:, None]).sum()))
    return torch.tensor(scores).view(len(cloze.items), -1)


@dataclass
class FlipReport:
    set_id: str
    corpus: str
    n_items: int
    n_choices: int
    accuracy_base: float
    accuracy_modified: float
    flips_right_to_wrong: int  # correct for the original model, wrong for the modified one
    flips_wrong_to_right: int
    changed_choices: int  # items whose chosen answer differs (right or wrong)
    items: pd.DataFrame  # per item: context (tail), answer, base_choice, modified_choice

    @property
    def flips(self) -> int:
        return self.flips_right_to_wrong + self.flips_wrong_to_right

    @property
    def flip_rate(self) -> float:
        return self.flips / self.n_items

    def metrics(self) -> dict[str, float]:
        d = {k: v for k, v in asdict(self).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return {**d, "flips": float(self.flips), "flip_rate": self.flip_rate}


def compare(cloze: ClozeSet, base_scores: torch.Tensor, mod_scores: torch.Tensor) -> FlipReport:
    """Accuracies and flips from the two models' scores [n_items, n_choices]."""
    answer = torch.tensor([it.answer for it in cloze.items])
    base_choice, mod_choice = base_scores.argmax(-1), mod_scores.argmax(-1)
    base_ok, mod_ok = base_choice == answer, mod_choice == answer
    items = pd.DataFrame(
        {
            "context": [it.context[-80:] for it in cloze.items],
            "answer": [it.choices[it.answer] for it in cloze.items],
            "base_choice": [it.choices[int(c)] for it, c in zip(cloze.items, base_choice, strict=True)],
            "modified_choice": [it.choices[int(c)] for it, c in zip(cloze.items, mod_choice, strict=True)],
        }
    )
    return FlipReport(
        set_id=cloze.set_id,
        corpus=cloze.corpus,
        n_items=len(cloze.items),
        n_choices=base_scores.shape[1],
        accuracy_base=float(base_ok.double().mean()),
        accuracy_modified=float(mod_ok.double().mean()),
        flips_right_to_wrong=int((base_ok & ~mod_ok).sum()),
        flips_wrong_to_right=int((~base_ok & mod_ok).sum()),
        changed_choices=int((base_choice != mod_choice).sum()),
        items=items,
    )


def flip_report(
    runner,
    spec,
    *,
    corpus: str | None = None,
    n_items: int = 64,
    n_choices: int = 4,
    seed: int = 0,
    progress=None,
):
    """Flips of `spec`'s modified model against the original on a cloze set from `corpus` (default: the
    evaluation corpus). The original model's scores are the same for every spec of a model and are not cached
    here: both models are scored each call (seconds on a small model). `progress` hears the stages and the
    modification block by block."""
    loaded = runner.base(spec.model)
    cloze = build_cloze(
        runner.corpus(corpus or spec.probe.corpus), n_items=n_items, n_choices=n_choices, seed=seed
    )
    if progress is not None:
        progress(0.0, f"scoring {n_items} cloze items with the original")
    base_scores = score_cloze(loaded.model, loaded.tokenizer, cloze)
    modified = runner.modify(spec, progress=scaled(progress, 0.1, 0.9))
    if progress is not None:
        progress(0.9, f"scoring {n_items} cloze items with {spec.label()}")
    transform = modified.transform_logits if modified.logit_transforms else None
    mod_scores = score_cloze(
        modified.model, loaded.tokenizer, cloze, transform=transform, needs_context=modified.needs_context
    )
    return compare(cloze, base_scores, mod_scores)
