"""synthgap's study glue: the typed experiment config (and, beside it, the runner's modules)."""
