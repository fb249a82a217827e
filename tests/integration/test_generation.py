"""Generation divergence: coupled sampling, greedy agreement with Hugging Face, per-step KL, side by side, CLI."""

import json
import math

import pytest
import torch
from tiny_runs import tiny_spec

from hemorrhage_core.cli import main
from hemorrhage_core.errors import SpecError
from hemorrhage_core.generation import (
    GenerationSettings,
    PromptBatch,
    generation_divergence,
    gumbel_noise,
    rollout,
    side_by_side_for_spec,
)
from hemorrhage_core.specs import CalibrateDecoding, QuantizeRTN, Temperature
from hemorrhage_core.specs.decode import RepetitionPenalty, TopP
from hemorrhage_core.specs.depth import DuplicateLayers, InsertIdentity

PROMPTS = ("The quick brown fox", "A calm river carries", "Numbers such as 1, 2, 3")
FAST = GenerationSettings(max_new_tokens=10, seeds=(0, 1, 2))


def test_gumbel_max_samples_the_distribution_and_is_reproducible():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    noise = torch.stack([gumbel_noise(seed, 0, 1, 4)[0] for seed in range(20000)])  # [n, V]
    freq = torch.bincount((probs.log() + noise).argmax(-1), minlength=4).float() / noise.shape[0]
    assert torch.allclose(freq, probs, atol=0.015)
    assert torch.equal(gumbel_noise(3, 1, 5, 10), gumbel_noise(3, 1, 5, 10))
    assert not torch.equal(gumbel_noise(3, 1, 5, 10), gumbel_noise(3, 2, 5, 10)), (
        "prompts get their own noise"
    )


def test_greedy_rollout_with_the_kv_cache_matches_hugging_face_generate(
    runner, tiny_llama_dir, tiny_gpt2_dir
):
    for model_dir in (tiny_llama_dir, tiny_gpt2_dir):
        loaded = runner.base(str(model_dir))
        ids = loaded.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
        ours = rollout(loaded.model, PromptBatch(ids, torch.ones_like(ids)), 12, None, None)
        theirs = loaded.model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
        assert torch.equal(ours[0], theirs[0, ids.shape[1] :])


def test_left_padded_batches_generate_what_each_prompt_generates_alone(runner, tiny_llama_dir, tiny_gpt2_dir):
    for model_dir in (tiny_llama_dir, tiny_gpt2_dir):
        loaded = runner.base(str(model_dir))
        batch = PromptBatch.encode(loaded.tokenizer, list(PROMPTS), torch.device("cpu"))
        assert batch.mask.sum(1).unique().numel() > 1, "the prompts differ in length: padding is exercised"
        together = rollout(loaded.model, batch, 10, None, None)
        for i, prompt in enumerate(PROMPTS):
            alone = rollout(
                loaded.model,
                PromptBatch.encode(loaded.tokenizer, [prompt], torch.device("cpu")),
                10,
                None,
                None,
            )
            assert torch.equal(together[i], alone[0])


def test_the_original_against_itself_never_diverges(runner, tiny_llama_dir, text_file):
    result = generation_divergence(runner, tiny_spec(tiny_llama_dir, text_file), PROMPTS, FAST)
    assert (result.rollouts.matching_prefix == 10).all() and not result.rollouts.diverged.any()
    assert (result.steps.kl == 0).all() and (result.steps.kl_reverse == 0).all()
    assert (result.survival.identical_share == 1.0).all()
    assert len(result.rollouts) == len(PROMPTS) * 3 and len(result.steps) == len(PROMPTS) * 3 * 10
    assert math.isnan(result.summary["gen_first_divergence_mean"])


def test_identity_blocks_generate_the_same_tokens_through_the_cache(runner, tiny_gpt2_dir, text_file):
    result = generation_divergence(
        runner, tiny_spec(tiny_gpt2_dir, text_file, InsertIdentity(every=1)), PROMPTS, FAST
    )
    assert result.summary["gen_identical_share"] == 1.0 and result.summary["gen_traj_kl_mean"] == 0.0


def test_sampling_is_seeded_and_reproducible(runner, tiny_llama_dir, text_file):
    spec = tiny_spec(tiny_llama_dir, text_file, Temperature(1.3))
    a = generation_divergence(runner, spec, PROMPTS, FAST)
    b = generation_divergence(runner, spec, PROMPTS, FAST)
    assert a.rollouts.equals(b.rollouts) and a.steps.equals(b.steps)
    texts = a.rollouts[a.rollouts.prompt_index == 0].base_text
    assert texts.nunique() > 1, "different seeds sample different continuations"


def test_higher_temperature_diverges_sooner_and_survival_falls(runner, tiny_llama_dir, text_file):
    settings = GenerationSettings(max_new_tokens=16, seeds=tuple(range(6)))
    prefix = []
    for t in (1.05, 1.5, 3.0):
        result = generation_divergence(
            runner, tiny_spec(tiny_llama_dir, text_file, Temperature(t)), PROMPTS, settings
        )
        share = result.survival.identical_share.to_list()
        assert share == sorted(share, reverse=True), "the identical share can only fall with length"
        assert 0 < result.summary["gen_traj_kl_mean"] < math.inf
        prefix.append(result.summary["gen_matching_prefix_mean"])
    assert prefix[0] > prefix[1] > prefix[2], prefix


def test_truncation_makes_the_trajectory_kl_infinite_and_cuts_mass(runner, tiny_llama_dir, text_file):
    result = generation_divergence(runner, tiny_spec(tiny_llama_dir, text_file, TopP(p=0.5)), PROMPTS, FAST)
    s = result.summary
    assert s["gen_traj_kl_mean"] == math.inf and 0 < s["gen_traj_kl_reverse_mean"] < math.inf
    assert 0.3 < s["gen_traj_mass_cut_mean"] <= 0.5 + 1e-6, "top-p 0.5 cuts at most half the mass"
    payload = json.loads(json.dumps(result.to_json_dict()))
    assert payload["summary"]["gen_traj_kl_mean"] is None


def test_greedy_ignores_temperature_but_not_repetition_penalty(runner, tiny_llama_dir, text_file):
    greedy = GenerationSettings(max_new_tokens=12, sample=False)
    hot = generation_divergence(
        runner, tiny_spec(tiny_llama_dir, text_file, Temperature(3.0)), PROMPTS, greedy
    )
    assert hot.summary["gen_identical_share"] == 1.0 and hot.summary["gen_traj_kl_mean"] > 0
    assert len(hot.rollouts) == len(PROMPTS), "greedy makes one rollout per prompt"
    rep = generation_divergence(
        runner, tiny_spec(tiny_llama_dir, text_file, RepetitionPenalty(penalty=5.0)), PROMPTS, greedy
    )
    assert rep.summary["gen_diverged_share"] > 0, (
        "the tiny model repeats itself; a strong penalty must change that"
    )


def test_side_by_side_marks_the_first_divergence(runner, tiny_llama_dir, text_file):
    same = side_by_side_for_spec(runner, tiny_spec(tiny_llama_dir, text_file), PROMPTS[1], 8)
    assert same.first_divergence is None and same.base_tokens == same.mod_tokens and len(same.base_ids) == 8
    spec = tiny_spec(tiny_llama_dir, text_file, DuplicateLayers(start=0, end=2, times=2), QuantizeRTN(bits=2))
    diff = side_by_side_for_spec(runner, spec, PROMPTS[1], 8)
    i = diff.first_divergence
    assert i is not None and diff.base_ids[:i] == diff.mod_ids[:i] and diff.base_ids[i] != diff.mod_ids[i]
    assert diff.base_text == "".join(diff.base_tokens)


def test_calibrated_spec_generates_through_the_runner(runner, tiny_llama_dir, text_file):
    calib = CalibrateDecoding(calib_corpus=text_file, calib_samples=4, calib_len=64)
    plain = generation_divergence(
        runner, tiny_spec(tiny_llama_dir, text_file, Temperature(2.0)), PROMPTS, FAST
    )
    fixed = generation_divergence(
        runner, tiny_spec(tiny_llama_dir, text_file, Temperature(2.0), calib), PROMPTS, FAST
    )
    assert fixed.summary["gen_traj_kl_mean"] < 1e-4 * plain.summary["gen_traj_kl_mean"] + 1e-7
    assert fixed.summary["gen_identical_share"] >= plain.summary["gen_identical_share"]


def test_bad_generation_settings_are_spec_errors():
    with pytest.raises(SpecError):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(SpecError):
        GenerationSettings(seeds=())


def test_cli_generate_json(tmp_path, monkeypatch, capsys, tiny_llama_dir, text_file):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    argv = [
        "generate",
        "--model",
        str(tiny_llama_dir),
        "--corpus",
        text_file,
        "--tokens",
        "256",
        "--window",
        "64",
    ]
    argv += ["--mod", "temperature:value=1.5", "--prompt", PROMPTS[0], "--prompt", PROMPTS[1]]
    argv += ["--max-new-tokens", "6", "--seeds", "0,1", "--db", str(tmp_path / "g.duckdb"), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["label"] == "T=1.5" and out["settings"]["seeds"] == [0, 1]
    assert len(out["rollouts"]) == 4 and len(out["survival"]) == 6
    assert 0 <= out["summary"]["gen_matching_prefix_mean"] <= 6
    assert main([*argv[:-1], "--greedy"]) == 0
    text = capsys.readouterr().out
    assert "T=1.5: matching prefix 6.0/6 tokens, identical 100%" in text
    assert main(["generate", "--model", str(tiny_llama_dir), "--seeds", "a,b"]) == 2
