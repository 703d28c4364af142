"""Notifications: what the platform must tell people (a budget's soft cap crossed, an
approval waiting), written to an outbox in the event's own transaction and sent later
through a connector tool the org chose (``notify.deliver``)."""
