"""The toolkit's own evidence: the pre-registered analysis of the norm sweep
(:mod:`videogn.science.analysis`; the sweep is ``scripts/sweep.py``, the ideal observer of its task
:mod:`videogn.data.ceilings`)."""
