"""One module per ``tte-hf`` sub-command: ``add_arguments(parser)`` and ``run(args)``."""
