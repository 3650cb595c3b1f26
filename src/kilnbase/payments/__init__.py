"""Payments through Stripe: InsForge's `/api/payments/stripe/...` and its webhook receiver."""
