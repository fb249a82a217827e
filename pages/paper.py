"""Paper: the seed paper's tables drawn as charts, cited, with our own runs of the same family overlaid on a
normalised axis (perplexity ratio to each model's own baseline)."""

import streamlit as st

from dashboard import paper as paper_view
from dashboard.navigation import through_app
from dashboard.state import runner
from hemorrhage_core import paper
from hemorrhage_core.analysis import views

through_app()

st.title("The paper's results, beside ours")
st.info("**Source.** " + paper.CITATION)

key = st.radio("Table", list(paper.TABLES), format_func=lambda k: paper.TABLES[k].title, key="paper.table")
st.caption(paper.TABLES[key].note)
if key == "decoding":
    paper_view.decoding_table()
    st.stop()

store = runner().store
history = views.history(store)
unnormalised = paper_view.normalised(store, history, key)
if key == "gguf":
    paper_view.gguf_tasks(store, history)
paper_view.appendix(key, unnormalised)
