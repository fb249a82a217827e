"""The architecture matrix (hemorrhage_core/archs.py): every tiny architecture gives the documented status.

The default run tries a representative dozen; `make test-archs` (marker `archs`) tries every registry entry.
When the library changes what an architecture supports, regenerate the documented matrix with
`hemlab archs --check --write` (or `--check NAME ... --write` for a few) and commit archs_matrix.json.
"""

from __future__ import annotations

import inspect
import json

import pytest

from hemorrhage_core import archs
from hemorrhage_core.cli import main
from hemorrhage_core.errors import SpecError

DOCUMENTED = archs.load_matrix()


def _arch_params():
    for name in archs.ARCHS:
        marks = () if name in archs.REPRESENTATIVE else (pytest.mark.archs,)
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_arch_params()))
def test_architecture_gives_the_documented_status(name, tmp_path):
    assert name in DOCUMENTED, (
        f"{name} is not in archs_matrix.json: run `hemlab archs --check {name} --write`"
    )
    results = archs.check(name, workdir=tmp_path)
    assert list(results) == list(archs.STEPS)
    diffs = archs.differences({name: results}, DOCUMENTED)
    assert not diffs, "the live matrix differs from archs_matrix.json:\n" + "\n".join(diffs)


# -- the registry -------------------------------------------------------------------------------------------------


def test_registry_lists_many_causal_lm_architectures_declaratively():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert len(archs.ARCHS) >= 59
    assert set(archs.REPRESENTATIVE) <= set(archs.ARCHS) and len(archs.REPRESENTATIVE) == 12
    for name, arch in archs.ARCHS.items():
        assert arch.name == name and arch.layout
        assert arch.config in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, name
        config_cls = CONFIG_MAPPING[arch.config]
        accepted = set(inspect.signature(config_cls.__init__).parameters) | set(config_cls.attribute_map)
        unknown = set(arch.kwargs) - accepted
        assert not unknown, f"{name}: {config_cls.__name__} takes no {', '.join(sorted(unknown))}"


def test_every_tiny_config_is_tiny_and_uses_the_tokenizer(tiny_tokenizer):
    for name in archs.ARCHS:
        config = archs.tiny_config(name, tiny_tokenizer).get_text_config()
        assert config.vocab_size == len(tiny_tokenizer), name
        assert config.hidden_size == 64 and config.num_hidden_layers == 3, name
        if getattr(config, "bos_token_id", None) is not None:
            assert config.bos_token_id == tiny_tokenizer.bos_token_id, name


def test_build_tiny_writes_a_folder_that_load_model_accepts(tmp_path, tiny_tokenizer):
    from hemorrhage_core.models import load_model

    folder = archs.build_tiny("qwen2", tmp_path / "qwen2", tiny_tokenizer)
    assert list(folder.glob("*.safetensors"))
    loaded = load_model(str(folder), device="cpu")
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"
    assert loaded.num_layers == 3 and loaded.tokenizer.eos_token == archs.EOS
    again = archs.build_tiny("qwen2", tmp_path / "again", tiny_tokenizer)
    assert (folder / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()  # seeded


# -- the documented matrix ------------------------------------------------------------------------------------------


def test_documented_matrix_covers_every_architecture_and_step():
    assert set(DOCUMENTED) == set(archs.ARCHS)
    for name, steps in DOCUMENTED.items():
        assert list(steps) == list(archs.STEPS), name
        for step, entry in steps.items():
            assert entry["status"] in archs.STATUSES, (name, step)
            assert bool(entry["message"]) == (entry["status"] != archs.OK), (name, step)


# -- how a step is judged -----------------------------------------------------------------------------------------


def test_identity_must_be_exact_and_a_modification_must_change_something():
    exact = {"kl_mean": 0.0, "kl_max": 0.0, "ppl_ratio": 1.0, "top1_agreement": 1.0}
    assert archs._judge("identity", exact) == ""
    assert "kl_max" in archs._judge("identity", {**exact, "kl_max": 1e-9})
    assert "ppl_ratio" in archs._judge("identity", {**exact, "ppl_ratio": 1.0000001})
    assert "top1_agreement" in archs._judge("identity", {**exact, "top1_agreement": 0.99})
    assert "changed nothing" in archs._judge("rtn4", exact)
    assert archs._judge("rtn4", {**exact, "kl_mean": 1e-4}) == ""
    assert "coverage" in archs._judge("rtn4", {**exact, "kl_mean": 1e-4, "coverage": 0.5})
    assert "kl_mean" in archs._judge("gptq4", {**exact, "kl_mean": float("nan")})


def test_check_sorts_exceptions_into_refused_and_failed(tmp_path, monkeypatch, tiny_tokenizer):
    from hemorrhage_core.runner import Runner

    def run(self, spec, **kw):
        if not spec.mods:
            raise SpecError(f"no, not in {tmp_path}")
        raise KeyError("blocks")

    monkeypatch.setattr(Runner, "run", run)
    results = archs.check("llama", ["identity", "rtn4"], tmp_path, tokenizer=tiny_tokenizer)
    assert results["identity"].status == archs.REFUSED
    assert results["identity"].message == "no, not in <workdir>"  # temporary paths are never documented
    assert results["rtn4"].status == archs.FAILED and results["rtn4"].message == "KeyError: 'blocks'"
    assert all(r.seconds > 0 for r in results.values())
    with pytest.raises(ValueError, match="unknown step"):
        archs.check("llama", ["nope"], tmp_path)


# -- the command line ---------------------------------------------------------------------------------------------


def test_cli_lists_the_matrix_as_json_text_and_markdown(capsys):
    assert main(["archs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(archs.ARCHS)
    llama = rows[0]
    assert llama["config_class"] == "LlamaConfig" and llama["layout"] == "GQA"
    assert {s: e["status"] for s, e in llama["steps"].items()} == {
        s: e["status"] for s, e in DOCUMENTED["llama"].items()
    }
    assert main(["archs"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in archs.ARCHS)
    assert main(["archs", "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| architecture | config | layout | " + " | ".join(archs.STEPS))
    assert md.count("\n| ") == len(archs.ARCHS)  # one row each, after the header and the rule


def test_cli_checks_live_and_writes_only_when_asked(tmp_path, capsys, monkeypatch):
    written = tmp_path / "matrix.json"
    monkeypatch.setattr(archs, "MATRIX_PATH", written)
    args = ["archs", "--check", "gpt2", "--steps", "identity,rtn4", "--workdir", str(tmp_path), "--json"]
    assert main(args) == 0
    live = json.loads(capsys.readouterr().out)
    assert {s: r["status"] for s, r in live["gpt2"].items()} == {"identity": "ok", "rtn4": "ok"}
    assert live["gpt2"]["identity"]["metrics"]["kl_max"] == 0.0
    assert not written.exists()
    assert main([*args[:-1], "--write"]) == 0
    assert json.loads(written.read_text()) == {
        "gpt2": {"identity": {"status": "ok", "message": ""}, "rtn4": {"status": "ok", "message": ""}}
    }
    capsys.readouterr()
    assert main(["archs", "--check", "no_such_arch"]) == 2
    assert "no_such_arch" in capsys.readouterr().err
