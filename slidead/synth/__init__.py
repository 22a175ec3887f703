"""The synthetic slide-rail plant: sounds, the plant tree, wear over nights."""
