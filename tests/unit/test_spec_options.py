"""What a spec field allows is data on the field (a Literal type, `option` bounds): one check reads it for every
kind, the dashboard's forms and `hemlab mods` read the same, and none of it enters a spec's hash."""

from __future__ import annotations

import json
import math

import pytest

from hemorrhage_core.cli import main
from hemorrhage_core.errors import SpecError
from hemorrhage_core.specs import (
    GGUF_TYPES,
    GPTQ,
    MODIFICATIONS,
    Against,
    InsertIdentity,
    KLDistill,
    ProbeSettings,
    Prune,
    QuantizeRTN,
    RunSpec,
    Sampler,
    Temperature,
    options,
    parse_mod,
)

# Cache keys measured before field metadata existed (at CODE_VERSION 4, set below, so a later version bump for a
# metric's meaning leaves the comparison intact): field metadata must not change any of them.
PINNED = [
    (QuantizeRTN(), "41319fc2b69a2660005b11bf09d18697"),
    (Prune(method="wanda", pattern="2:4", sparsity=0.5), "49dfe9215ffd31948d0095f5b2e011ae"),
    (GPTQ(bits=3, group_size=-1, partial=True), "ff1e9d02b433c180dd90f61df21cb444"),
    (InsertIdentity(after=(1, 3)), "9c95a772fc59e28e579ddfe8cb4359c2"),
    (Sampler(), "a8c87468bf84f1d548eb8dc2b6d882c5"),
    (Against(source="/x/y", identity="sha:abc"), "36e4e4bd8e67806d859c5ba75d72997c"),
    (KLDistill(), "923c698f3615fa7197c07c417e321a09"),
]


@pytest.mark.parametrize(("mod", "key"), PINNED, ids=[m.kind for m, _ in PINNED])
def test_cache_keys_are_pinned(mod, key, monkeypatch):
    monkeypatch.setattr("hemorrhage_core.specs.base.CODE_VERSION", "4")
    spec = RunSpec("m", (mod,), ProbeSettings())
    assert spec.cache_key(corpus_sha256="c", model_identity="embedded:m") == key
    assert RunSpec("m").cache_key(corpus_sha256="c", model_identity="m") == "6190036723b7b6ad72ea9a0539ceb24b"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: QuantizeRTN(bits=9), "quant_rtn: bits must be an integer between 2 and 8, got 9"),
        (lambda: QuantizeRTN(bits=4.5), "an integer between 2 and 8, got 4.5"),
        (lambda: QuantizeRTN(bits=True), "got True"),
        (lambda: QuantizeRTN(scheme="odd"), "quant_rtn: scheme must be 'sym' or 'asym', got 'odd'"),
        (lambda: QuantizeRTN(group_size=1), "group size (group_size) must be an integer of at least 2"),
        (lambda: GPTQ(group_size=0), "group_size must be -1 (one scale per output channel) or an integer of"),
        (lambda: Prune(sparsity=1.0), "prune: sparsity must be in [0, 1), got 1.0"),
        (lambda: Prune(method="random"), "one of 'magnitude', 'wanda', 'sparsegpt', 'gblm', 'taylor'"),
        (lambda: Prune(calib_corpus=" "), "calibration corpus (calib_corpus) must be"),
        (lambda: Temperature(math.nan), "temperature: value must be in [0.001, 100], got nan"),
        (lambda: Sampler(top_p=-1.0), "sampler: top-p mass (top_p) must be in (0, 1], got -1.0"),
    ],
)
def test_one_check_reads_the_field_rules(make, message):
    with pytest.raises(SpecError) as err:
        make()
    assert message in str(err.value)


def test_special_values_and_optional_bounds_pass():
    assert GPTQ(group_size=-1).group_size == -1
    assert Sampler(top_k=0).top_k == 0 and Sampler(top_k=40).top_k == 40
    with pytest.raises(SpecError, match="top-k size"):
        Sampler(top_k=-3)


@pytest.mark.parametrize("kind", sorted(MODIFICATIONS))
def test_every_value_a_form_offers_is_accepted(kind):
    """Suggested values, Literal choices and slider ends each build a valid spec with the other fields at
    their defaults (what used to be probed at run time by building instances)."""
    cls = MODIFICATIONS[kind]
    base = {"checkpoint": dict(source="/x", identity="i"), "insert_identity": dict(every=2)}.get(kind, {})
    base_cls = {"remove_layers": dict(layers=(1,))}.get(kind, base)
    for opt in options(cls):
        offered = [*opt.choices, *opt.suggestions()]
        if opt.slider:
            offered += [opt.slider[0], opt.slider[1]]
            assert opt.slider[0] <= opt.default <= opt.slider[1], f"{kind}.{opt.name}: default off its slider"
        for value in offered:
            # Types that llama-quantize refuses without an importance matrix say so (a check between fields).
            pair = (
                {"imatrix": GGUF_TYPES[value].needs_imatrix} if (kind, opt.name) == ("gguf", "qtype") else {}
            )
            cls(
                **{**base_cls, **pair, opt.name: value}
            )  # raises SpecError if the form offered a refused value


def test_mods_lists_allowed_values_bounds_and_the_syntax(capsys):
    assert main(["mods"]) == 0
    text = capsys.readouterr().out
    assert "--mod KIND:OPTION=VALUE" in text and "joined by +" in text
    assert "'wanda'" in text and "'sparsegpt'" in text and "2:4" in text
    assert "an integer between 2 and 8" in text
    lines = [
        line.strip()[len("--mod ") :]
        for line in text.splitlines()
        if line.startswith(" ") and "--mod " in line
    ]
    assert len(lines) == len(MODIFICATIONS)
    for line in lines:  # every printed default line is read back as those defaults
        kind = line.partition(":")[0]
        try:
            assert parse_mod(line) == MODIFICATIONS[kind]()
        except SpecError:  # no valid default (a checkpoint needs its source): refused the same way both times
            with pytest.raises(SpecError):
                MODIFICATIONS[kind]()
    assert main(["mods", "--json"]) == 0
    rows = {r["kind"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["prune"]["options"]["method"] == "magnitude"  # the old fields stay
    method = next(f for f in rows["prune"]["fields"] if f["name"] == "method")
    assert "wanda" in method["choices"] and "sparsegpt" in method["choices"]
    bits = next(f for f in rows["gptq"]["fields"] if f["name"] == "bits")
    assert bits["bounds"] == {"ge": 2, "le": 8}
    pattern = next(f for f in rows["prune"]["fields"] if f["name"] == "pattern")
    assert "2:4" in pattern["suggested"]
