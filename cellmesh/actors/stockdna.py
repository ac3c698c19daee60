"""The DNA of a cell whose code ships with cellmesh (``entry = "cellmesh.ledger:Ledger"``).

A manifest may leave out ``dna`` for such a cell: its code is imported from
the installed cellmesh, which every sandbox sees, so the cell needs no code
of its own. The root then gives it this module as its DNA (a DNA is always
a module file or a package; this one defines nothing). As its content never
changes, ``cellmesh swap`` of such a cell says "DNA unchanged": new cellmesh
code reaches it with its next restart, or ``cellmesh down`` / ``up``.
"""
