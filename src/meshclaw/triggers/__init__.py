"""Triggers that start runs by themselves: cron schedules and signed webhooks."""
