from __future__ import annotations

import meshclaw.providers.scripted as scripted


def test_public_surface_is_sorted_and_complete() -> None:
    assert scripted.__all__ == sorted(scripted.__all__)
    assert set(scripted.__all__) == {
        "Script",
        "ScriptedServer",
        "ScriptedTurn",
        "count_tokens",
        "create_app",
        "load_script",
    }
    for name in scripted.__all__:
        assert getattr(scripted, name) is not None
