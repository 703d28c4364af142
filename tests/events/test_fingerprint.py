"""Text fingerprints: stable, comparable, and free of the text itself."""

from __future__ import annotations

from meshclaw.events import fingerprint, similarity
from meshclaw.events._fingerprint import K, minhash_matrix


def test_identical_texts_match_and_unrelated_ones_do_not() -> None:
    a = fingerprint("Summarise the weekly status report for the billing team")
    assert similarity(a, a) == 1.0
    assert similarity(a, fingerprint("summarise weekly status report billing team!")) == 1.0
    assert similarity(a, fingerprint("Schedule a demo with Contoso next Tuesday")) <= 0.15


def test_light_paraphrase_is_closer_than_a_different_task() -> None:
    base = fingerprint("check the checkout backlog and draft a weekly report for the team")
    paraphrase = fingerprint(
        "draft a weekly report for the team and check the checkout backlog now"
    )
    other = fingerprint("rotate credentials for the auth service accounts")
    assert similarity(base, paraphrase) >= 0.7
    assert similarity(base, other) <= 0.15


def test_signatures_are_stable_across_processes_and_versions() -> None:
    # Stored prints are compared with new ones: the signature must never change.
    sig = fingerprint("deploy billing release 42").minhash
    assert len(sig) == K
    assert sig[:4] == (2884819440, 1202234027, 473865974, 1747603604)


def test_counts_and_batch_agree_with_single() -> None:
    text = "fix fix fix the failing test"
    tp = fingerprint(text)
    assert (tp.words, tp.unique) == (5, 3)
    batch = minhash_matrix([text, None, "!!!"])
    assert tuple(batch[0].tolist()) == tp.minhash
    assert batch[1].tolist() == batch[2].tolist() == [0xFFFFFFFF] * K
