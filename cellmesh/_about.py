"""The attribution notice printed by ``cellmesh --about`` (kept equal to ./ATTRIBUTION)."""

from typing import Final

ABOUT: Final = """\
cellmesh grew from the design of "Cell - Biological Distributed Super-computing
Substrate" (https://github.com/Leif-Rydenfalk/cell), whose license is
MIT + Attribution. Its notice, reproduced as that license requires:

    Copyright (c) 2025 Leif Rydenfalk

    Attribution requirement: The above copyright notice shall be reproduced in
    any binary, source or derivative distribution (including compiled artifacts,
    container images, SaaS, or embedded firmware) in one of these forms:
      - A file named ATTRIBUTION in the root/top-level directory, or
      - A visible "About"/"Credits" page/UI element, or
      - A command-line flag --about that prints the notice.

cellmesh is an independent Python implementation: no code of the original is
used. `cellmesh --about` prints this notice.
"""
