"""Streamlit glue shared by the pages: the process-wide runner, the sidebar state, chart + export widgets.

Pages stay short scripts (read widgets, guard, one call, draw); everything stateful lives here.
"""
