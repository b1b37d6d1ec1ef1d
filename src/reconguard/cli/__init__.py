"""The ``reconguard`` command line: one module per sub-command, registered on one root parser."""
