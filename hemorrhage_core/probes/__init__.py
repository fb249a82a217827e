"""Observation sites, pure metric functions, the base reference cache and the profile itself."""
