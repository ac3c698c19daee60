"""The wire layer: sans-I/O framing, proteins, and vesicles.

Layer 1 (``leaves < wire < transport < sandbox < consensus < actors < ledger
< testing < bench < cli``; docs/architecture.md). It may import only the
leaves (:mod:`cellmesh.errors`); the codec, proteins and batching import no
I/O at all (house rule 1, ``tests/wire/test_purity.py``).
"""
