"""The pure key lifecycle: values, commands and the decider. No I/O here."""
