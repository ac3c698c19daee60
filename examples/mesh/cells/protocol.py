"""The proteins the example mesh's cells exchange."""

import cellmesh


@cellmesh.protein("mesh.Order")
class Order:
    """A customer orders ``quantity`` of ``item``."""

    order_id: int
    item: str
    quantity: int


@cellmesh.protein("mesh.Receipt")
class Receipt:
    """The frontend's answer: the price and the ledger's running total."""

    order_id: int
    price_cents: int
    total_cents: int


@cellmesh.protein("mesh.Quote")
class Quote:
    """Ask the pricer for the price of ``quantity`` of ``item``."""

    item: str
    quantity: int


@cellmesh.protein("mesh.Price")
class Price:
    cents: int


@cellmesh.protein("mesh.Record")
class Record:
    """Add ``cents`` to the ledger; idempotent per ``order_id``."""

    order_id: int
    cents: int


@cellmesh.protein("mesh.Total")
class Total:
    cents: int
    orders: int


@cellmesh.protein("mesh.Summary")
class Summary:
    """Ask the frontend what it has seen (pricer restarts it was told about)."""


@cellmesh.protein("mesh.SummaryReply")
class SummaryReply:
    orders: int
    pricer_downs: list[str]
