"""``reconguard reproduce``: the papers' claims, each run by its paper's protocol, paper next to ours.

See :mod:`reconguard.audit.reproduce.common` for the table row and the verdict rule.
"""
