"""The API: kinds, their schemas (loaded from ``crds/``), and manifest parsing."""
