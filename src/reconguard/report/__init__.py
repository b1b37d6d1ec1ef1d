"""Reports: figures (and later tables and HTML) built from attack results and audit records.

Importing this package does not import matplotlib; each figure function does, lazily.
"""

from reconguard.report.figures import attack_panel, save_figure

__all__ = ["attack_panel", "save_figure"]
