"""Chapter experiment drivers, one public module per paper key (``mathlib.experiments.<key>``).

The core ``mathlib`` is paper-agnostic and never imports these modules; each module builds one
chapter's sweeps on the core's public API. Notebooks import one as, e.g.,
``from mathlib.experiments import fallah2020 as ex``. Nothing here is re-exported into ``mathlib.*``.
"""
