"""synthgap's own package, in three floors: the ground here (errors, devices, settings, data/),
the generic stage runner (runner/) and the MNIST study (study/). tests/test_architecture.py holds
the rule that each floor imports only the floors below it."""
