"""Hemorrhage Lab: the router (pages, sections, shared sidebar: hemorrhage_core/ui/navigation.py). No computation."""

from hemorrhage_core.ui.navigation import navigation

navigation().run()
