"""The tamper-evident audit log (docs/audit.md).

Layers, bottom up:

* ``merkle`` — RFC 9162 tree hashing and proofs (pure functions, no store).
* ``canonical`` — RFC 8785 bytes of a record's header and body, and their hashes.
* ``checkpoint`` / ``keys`` / ``signing`` — C2SP signed checkpoints, the Ed25519 key file,
  writing checkpoints to the store and to a directory.
* ``sink`` — ``AuditSink``: how every service appends, inside its own transaction.
* ``verify`` / ``bundle`` — checking a log (the store's or an export's) from its records
  and signed checkpoints only.
* ``log`` — ``AuditLog``: query, proofs, verification, retention and export, role-checked
  by ``access``.

Nothing is imported here: ``accounts`` imports ``sink`` while ``log`` imports
``accounts``.
"""
