"""Payments through Stripe and Razorpay: InsForge's `/api/payments/<provider>/...` and its webhook receivers.

What every provider shares is written once, and a provider's own modules hold only what differs:

- shared: `provider_http.py` (the HTTP exchange with a provider's API and its errors), `provider_state.py`
  (stored keys, the connection row, a new account's clean-up, over a `Profile` per provider),
  `webhook_log.py` (the webhook event log), `mirror_upsert.py` and `customer_mappings.py` (the mirror's
  writes), `shapes.py` (`RowShape`: rows as InsForge's JSON), `provider_routes.py` and `tool_arguments.py`
  (the HTTP edge and MCP arguments), `definitions.py` (request checking), `customers.py` (customers lists);
- Stripe: `stripe_api.py`, `service.py`, `events.py`, `mirror.py`, `routes.py`, `tools.py`;
- Razorpay: `razorpay_api.py`, `razorpay_service.py`, `razorpay_events.py`, `razorpay_mirror.py`,
  `razorpay_shapes.py`, `razorpay_definitions.py`, `razorpay_routes.py`, `razorpay_tools.py`.

A third provider adds its own API client, profile, mirror and routes table over the shared modules.
"""
