"""Build tooling of the companion book: notebook execution, gallery and status pages.

Not part of the numerical library; ``python -m mathlib.book --help`` lists the commands.
"""

from mathlib.book._records import read_records

__all__ = ["read_records"]
