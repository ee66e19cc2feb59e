"""The ``kvmrec`` command: one module per subcommand, dispatched from ``main``."""
