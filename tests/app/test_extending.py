"""A new modification family is three places: its spec module (kinds and `register_family`), its handler and its
page. This test adds a toy family here, in the test, and checks that everything else picks it up unedited:
the navigation, the family page's form, the chart colours, the stacking order, the sweeps page and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from dashboard_env import applied, make_env
from streamlit.testing.v1 import AppTest

# Imported before the toy family exists, as in a running app: what they derive from the registry must be read late.
from dashboard import fields
from dashboard.navigation import sections
from hemorrhage_core.charts import FAMILY_COLORS
from hemorrhage_core.charts.style import run_styles
from hemorrhage_core.cli import main
from hemorrhage_core.modify import HANDLERS, handles
from hemorrhage_core.specs import MODIFICATIONS, Modification, modification, option
from hemorrhage_core.specs.families import FAMILIES, Family, register_family, stack_order

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = '''"""Toy: every method of the toy family, measured against the original model."""

from dashboard.family import family_page
from dashboard.navigation import through_app

through_app()
family_page("toy")
'''


def _scale(logits, *, factor: float):
    return logits * factor


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The three places of a family, made here: the spec (with its family entry), the handler and the page."""
    page = tmp_path_factory.mktemp("toy-page") / "toy.py"
    page.write_text(PAGE)
    entry = register_family(
        Family(
            "toy", "Toy", "science", "#123456", 5, False, "A family that only exists in a test.", str(page)
        )
    )

    # 1. The spec.
    @modification("toy_sharpen")
    @dataclass(frozen=True)
    class ToySharpen(Modification):
        """Toy sharpening: the logits are multiplied by `factor`."""

        family: ClassVar[str] = "toy"
        touches_weights: ClassVar[bool] = False
        factor: float = option(1.5, ge=0.5, le=4.0, slider=(0.5, 4.0, 0.5), help="logits times this")
        flavour: Literal["plain", "fancy"] = option("plain", help="a choice the form must offer")

        def label(self) -> str:
            return f"toy x{self.factor:g}"

    # 2. The handler.
    @handles(ToySharpen)
    def apply_toy(state, mod, ctx) -> None:
        state.logit_transforms.append(partial(_scale, factor=mod.factor))

    yield entry, ToySharpen
    del MODIFICATIONS["toy_sharpen"], FAMILIES["toy"], HANDLERS[ToySharpen]


def test_the_registries_pick_up_a_new_family(toy):
    entry, cls = toy
    assert (entry.page, "Toy", "science") in sections()["Modify"]
    assert list(fields.family_kinds("toy")) == ["toy_sharpen"]
    form = {f.name: f for f in fields.form_fields(cls)}
    assert (form["factor"].widget, form["factor"].lo, form["factor"].hi) == ("slider", 0.5, 4.0)
    assert form["flavour"].choices == ("plain", "fancy")
    assert [f.name for f in fields.sweepable(cls)] == ["factor"]
    assert FAMILY_COLORS["toy"] == "#123456" and "toy" in list(FAMILY_COLORS)
    assert run_styles(["a", "b"], ["toy", "prune"])["a"][0] == "#123456"
    assert stack_order()[-1] == "toy"  # stack_order 5: after decoding


def test_the_dashboard_shows_the_new_family(toy, tmp_path, tiny_llama_dir):
    entry, _ = toy
    with applied(make_env(tmp_path, tiny_llama_dir)):
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        at.switch_page(entry.page).run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.title[0].value == "Toy"
        assert at.selectbox(key="toy.method").value == "toy_sharpen"
        assert at.slider(key="toy.toy_sharpen.factor").value == 1.5

        at.switch_page("pages/sweeps.py").run()
        assert not at.exception, [e.value for e in at.exception]
        family = at.selectbox(key="sweep.family")
        assert "Toy" in family.options  # shown by its title
        family.set_value("toy").run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.text_input(key="sweep.toy_sharpen.factor.values").value  # a first sweep over its range


def test_the_cli_runs_the_new_family(toy, tmp_path, monkeypatch, capsys, tiny_llama_dir, word_text):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    corpus = word_text(["river", "sea", "town", "news", "day", "old", "quick", "fox"], 1500)
    argv = ["run", "--model", str(tiny_llama_dir), "--corpus", corpus, "--tokens", "256", "--window", "64"]
    argv += ["--db", str(tmp_path / "r.duckdb"), "--mod", "toy_sharpen:factor=2", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spec"]["mods"] == [{"kind": "toy_sharpen", "factor": 2.0, "flavour": "plain"}]
    assert out["metrics"]["kl_mean"] > 0  # sharpening the logits moves the distribution
    assert main(["mods"]) == 0
    assert "toy_sharpen" in capsys.readouterr().out
