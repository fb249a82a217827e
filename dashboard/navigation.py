"""The app's navigation: its pages in sections, the page config and the shared sidebar.

`app.py` calls `navigation().run()`. Every page script calls `through_app()` first, because Streamlit treats a
`pages/` folder beside the entry script as a legacy multipage app until st.navigation has been called in the
process (and AppTest resets that on every run): a first request for a deep link such as /prune then runs the
page script alone, with the folder listing as navigation and no page config or sidebar. `through_app` then installs
the real navigation, runs the page it resolves (the same script, under the identity st.navigation gives it, so
widget state carries over between runs) and stops the legacy run. All in the same run: a rerun would swallow
the click that started it.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from hemorrhage_core.specs.families import with_pages

from .state import sidebar

# section -> (page script, title, Material icon); the Modify section is the family registry's pages, read when
# the navigation is built (`sections()`), so a family registered by its spec module is listed without an edit here.
SECTIONS: dict[str, list[tuple[str, str, str]]] = {
    "Set up": [("pages/model.py", "Model", "tune")],
    "Modify": [],
    "Analyse": [
        ("pages/layers.py", "Layers", "stacked_line_chart"),
        ("pages/attention.py", "Attention", "visibility"),
        ("pages/divergence.py", "Divergence", "call_split"),
        ("pages/tasks.py", "Tasks", "checklist"),
        ("pages/sweeps.py", "Sweeps & thresholds", "show_chart"),
    ],
    "Results": [
        ("pages/compare.py", "Compare & history", "history"),
        ("pages/paper.py", "Paper", "article"),
    ],
}
DEFAULT_PAGE = "pages/quantize.py"


def sections() -> dict[str, list[tuple[str, str, str]]]:
    """Every section's pages, the Modify section from the family registry (`FAMILIES` entries with a page)."""
    modify = [(f.page, f.title, f.icon) for f in with_pages() if f.page]
    return {name: modify if name == "Modify" else pages for name, pages in SECTIONS.items()}


def navigation():
    """Page config, the navigation and the sidebar; returns the page to run (st.navigation's choice)."""
    st.set_page_config(page_title="Hemorrhage Lab", page_icon=":material/bloodtype:", layout="wide")
    nav = st.navigation(
        {
            section: [
                st.Page(path, title=title, icon=f":material/{icon}:", default=path == DEFAULT_PAGE)
                for path, title, icon in pages
            ]
            for section, pages in sections().items()
        },
        expanded=True,  # every page listed: Streamlit otherwise folds a long menu behind "View more"
    )
    sidebar()
    return nav


def through_app() -> None:
    """Call first in every page script: when Streamlit ran the page alone, run it inside the app instead."""
    if PagesManager.uses_pages_directory:
        navigation().run()
        st.stop()
