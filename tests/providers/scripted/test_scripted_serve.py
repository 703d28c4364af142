"""``serve()`` in its own process, the way ``meshclaw model-server`` runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai

SCRIPT = "models: [demo]\nturns:\n  - reply: {content: 'Hello from the script.'}\n"


def _command(script: Path) -> list[str]:
    return [sys.executable, "-m", "meshclaw.providers.scripted", "--script", str(script)]


def test_serve_prints_base_url_and_answers(tmp_path: Path) -> None:
    script = tmp_path / "demo.yaml"
    script.write_text(SCRIPT, encoding="utf-8")
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [*_command(script), "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()  # printed only once listening
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v1")
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
            reply = client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "Hello from the script."
        assert httpx.get(f"{base_url}/models").json()["data"][0]["id"] == "demo"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        log.close()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert process.returncode == -signal.SIGTERM
    assert "Finished server process" in (tmp_path / "server.log").read_text()


def test_serve_refuses_an_invalid_script(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("turns: []\n", encoding="utf-8")
    done = subprocess.run(_command(script), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "turns:" in done.stderr
    assert done.stdout == ""
