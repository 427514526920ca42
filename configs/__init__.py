"""The experiments shipped with synthgap, as TOML files (package data)."""
