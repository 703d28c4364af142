"""What each AgentDojo tool is, as the builder of its MCP connector would declare it.

* ``write``: the tool changes something (MCP ``readOnlyHint: false``).
* ``outside``: its results carry text written by people outside the org (mail, web
  pages, reviews, shared files, messages, transaction subjects): MCP
  ``openWorldHint: true``, and the replay marks such results ``untrusted``.
* ``steer``: arguments that say *which* object or *whom* the call touches (recipient,
  IBAN, channel, URL, file id). The scopes pin them to the values the task involves.
* ``when``: date/time arguments; the scopes pin them to the day the task names.

Everything else (bodies, subjects, amounts, search queries) is content the agent
composes and stays free, apart from the ``#link`` provenance rule (``scopes``).
This is per tool, from what the tool does: nothing here looks at injection tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Tool:
    write: bool = False
    outside: bool = False
    steer: tuple[str, ...] = ()
    when: tuple[str, ...] = field(default=())


R = Tool()
OUT = Tool(outside=True)

_CALENDAR = {
    "search_calendar_events": OUT,
    "get_day_calendar_events": OUT,
    "create_calendar_event": Tool(
        write=True, steer=("participants",), when=("start_time", "end_time")
    ),
    "cancel_calendar_event": Tool(write=True, steer=("event_id",)),
}
_SEND_EMAIL = Tool(write=True, steer=("recipients", "cc", "bcc", "attachments.file_id"))

CATALOG: dict[str, dict[str, Tool]] = {
    "banking": {
        "get_iban": R,
        "send_money": Tool(write=True, steer=("recipient",), when=("date",)),
        "schedule_transaction": Tool(write=True, steer=("recipient",), when=("date",)),
        "update_scheduled_transaction": Tool(write=True, steer=("id", "recipient"), when=("date",)),
        "get_balance": R,
        "get_most_recent_transactions": OUT,
        "get_scheduled_transactions": R,
        "read_file": Tool(outside=True, steer=("file_path",)),
        "get_user_info": R,
        "update_password": Tool(write=True, steer=("password",)),
        "update_user_info": Tool(write=True),
    },
    "slack": {
        "get_channels": OUT,
        "add_user_to_channel": Tool(write=True, steer=("user", "channel")),
        "read_channel_messages": Tool(outside=True, steer=("channel",)),
        "read_inbox": Tool(outside=True, steer=("user",)),
        "send_direct_message": Tool(write=True, steer=("recipient",)),
        "send_channel_message": Tool(write=True, steer=("channel",)),
        "get_users_in_channel": Tool(steer=("channel",)),
        "invite_user_to_slack": Tool(write=True, steer=("user", "user_email")),
        "remove_user_from_slack": Tool(write=True, steer=("user",)),
        "get_webpage": Tool(outside=True, steer=("url",)),
        "post_webpage": Tool(write=True, steer=("url",)),
    },
    "workspace": {
        "send_email": _SEND_EMAIL,
        "delete_email": Tool(write=True, steer=("email_id",)),
        "get_unread_emails": OUT,
        "get_sent_emails": R,
        "get_received_emails": OUT,
        "get_draft_emails": R,
        "search_emails": OUT,
        "search_contacts_by_name": R,
        "search_contacts_by_email": R,
        "get_current_day": R,
        **_CALENDAR,
        "reschedule_calendar_event": Tool(
            write=True, steer=("event_id",), when=("new_start_time", "new_end_time")
        ),
        "add_calendar_event_participants": Tool(write=True, steer=("event_id", "participants")),
        "append_to_file": Tool(write=True, steer=("file_id",)),
        "search_files_by_filename": OUT,
        "create_file": Tool(write=True, steer=("filename",)),
        "delete_file": Tool(write=True, steer=("file_id",)),
        "get_file_by_id": Tool(outside=True, steer=("file_id",)),
        "list_files": OUT,
        "share_file": Tool(write=True, steer=("file_id", "email", "permission")),
        "search_files": OUT,
    },
    "travel": {
        "get_user_information": R,
        "get_all_hotels_in_city": R,
        "get_hotels_prices": R,
        "get_rating_reviews_for_hotels": OUT,
        "get_hotels_address": R,
        "get_all_restaurants_in_city": R,
        "get_cuisine_type_for_restaurants": R,
        "get_restaurants_address": R,
        "get_rating_reviews_for_restaurants": OUT,
        "get_dietary_restrictions_for_all_restaurants": R,
        "get_contact_information_for_restaurants": R,
        "get_price_for_restaurants": R,
        "check_restaurant_opening_hours": R,
        "get_all_car_rental_companies_in_city": R,
        "get_car_types_available": R,
        "get_rating_reviews_for_car_rental": OUT,
        "get_car_fuel_options": R,
        "get_car_rental_address": R,
        "get_car_price_per_day": R,
        **_CALENDAR,
        "reserve_hotel": Tool(write=True, steer=("hotel",), when=("start_day", "end_day")),
        "reserve_car_rental": Tool(write=True, steer=("company",), when=("start_time", "end_time")),
        "reserve_restaurant": Tool(write=True, steer=("restaurant",), when=("start_time",)),
        "get_flight_information": R,
        "send_email": _SEND_EMAIL,
    },
}


OUTSIDE_TOOL = "read_outside_message"
"""The replay's own read from outside the org (``server``): how an injection arrives."""
for _tools in CATALOG.values():
    _tools[OUTSIDE_TOOL] = OUT


def tool(suite: str, name: str) -> Tool:
    """The declaration of ``name``; a tool nobody declared is a write from outside."""
    return CATALOG[suite].get(name, Tool(write=True, outside=True))
