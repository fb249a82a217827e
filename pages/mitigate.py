"""Mitigate: pick a damaged chain and the remedies that apply; the recovered share of the damage is the headline.

The logic lives in dashboard/mitigate.py (widgets and layout) and hemorrhage_core/mitigation.py (pure).
"""

from dashboard.mitigate import page
from dashboard.navigation import through_app

through_app()
page()
