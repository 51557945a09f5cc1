"""Enrollment service: program eligibility, decisions, sign-up bonuses and rebates, removal."""
