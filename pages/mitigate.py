"""Mitigate: pick a damaged chain and the remedies that apply; the recovered share of the damage is the headline.

The logic lives in hemorrhage_core/ui/mitigate.py (widgets and layout) and hemorrhage_core/mitigation.py (pure).
"""

from hemorrhage_core.ui.mitigate import page
from hemorrhage_core.ui.navigation import through_app

through_app()
page()
