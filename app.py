"""Hemorrhage Lab: the router (pages, sections, shared sidebar: dashboard/navigation.py). No computation."""

from dashboard.navigation import navigation

navigation().run()
