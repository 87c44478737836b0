"""The ``keyledger`` command line."""
