"""Tests of the lab (experiments/): run apart from the library suite, see experiments/README.md."""
