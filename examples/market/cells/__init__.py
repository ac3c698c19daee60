"""The market example's cells: an exchange that settles in a replicated ledger."""
