"""Settlement: credits, bonuses and bill periods into the billing ledger."""
