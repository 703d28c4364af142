"""Protocol-level fakes of workplace apps, shipped so tests and demos need no outside service.

Each is a real server on loopback speaking the app's published wire format, so the
app's real client library runs against it unchanged (``slack.SlackFake``).
"""
