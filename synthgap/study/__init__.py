"""The MNIST study: its typed config, its stage graph and stage functions, its report and figures,
and `pipeline bench`. It uses the runner (synthgap/runner) and the libraries (renderers, gan,
classifiers); nothing below it imports it."""
