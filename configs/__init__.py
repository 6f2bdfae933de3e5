"""Configs: `default.py` plus one file per dataset; see `variants.py` for the `:variant,...` syntax."""
